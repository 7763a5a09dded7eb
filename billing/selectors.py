"""Billing reads: this period's usage priced against the subscription, the estimate and forecast."""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet, Sum
from django.utils import timezone

from billing.models import (
    Alert,
    BillingPeriod,
    DailyUsage,
    Invoice,
    Subscription,
)
from billing.pricing import overage_blocks, price_for_peak
from contacts.status.models import PendingApproval
from contacts.status.selectors import (
    UsageSnapshot,
    usage_current,
)
from crm.models import Account

# The forecast's rate of new marketing contacts is the mean over this many recent days.
FORECAST_WINDOW_DAYS = 7

__all__ = ["overage_blocks", "billing_usage", "billing_forecast"]


def billing_forecast(*, usage: UsageSnapshot, subscription: Subscription, at: dt.datetime) -> dict:
    """The current peak is a floor; add the recent daily rate of new marketing contacts
    over the rest of the period, and price it with the same function as the invoice."""
    since = (at - dt.timedelta(days=FORECAST_WINDOW_DAYS)).date()
    recent = DailyUsage.objects.filter(day__gt=since, day__lte=at.date()).aggregate(
        n=Sum("became_marketing")
    )
    rate = (recent["n"] or 0) / FORECAST_WINDOW_DAYS
    days_left = max(0.0, (usage.period_end - at).total_seconds() / 86_400)
    peak = max(usage.peak_count, usage.live_count + round(rate * days_left))
    price = price_for_peak(peak=peak, subscription=subscription)
    return {
        "peak_count": peak,
        "rate_per_day": round(rate, 1),
        "days_left": round(days_left, 1),
        "blocks": price.blocks,
        "total": price.total,
    }


def billing_usage(*, at: dt.datetime | None = None) -> dict:
    at = at or timezone.now()
    usage = usage_current(at=at)
    subscription = Subscription.load()
    estimate = price_for_peak(peak=usage.peak_count, subscription=subscription)
    included = subscription.included_contacts
    return {
        "live_count": usage.live_count,
        "peak_count": usage.peak_count,
        "opening_count": usage.opening_count,
        "included_contacts": included,
        "percent_used": round(100 * usage.peak_count / included, 1) if included else None,
        "period_start": usage.period_start,
        "period_end": usage.period_end,
        "next_update_date": usage.next_update,
        "pending_downgrades": usage.pending_downgrades,
        # What the pending downgrades save: next period opens without them.
        "pending_saving": estimate.total
        - price_for_peak(
            peak=max(0, usage.live_count - usage.pending_downgrades), subscription=subscription
        ).total,
        "overage_blocks": estimate.blocks,
        "headroom": estimate.headroom,
        "block_size": subscription.block_size,
        "currency": subscription.currency,
        "estimate": {
            "base": estimate.base_price,
            "overage": estimate.overage,
            "total": estimate.total,
        },
        "forecast": billing_forecast(usage=usage, subscription=subscription, at=at),
        "hard_cap": Account.load().hard_cap,
        "alerts": [
            {"kind": a.kind, "threshold": a.threshold, "message": a.message, "fired_at": a.fired_at}
            for a in billing_alerts_open(period_start=usage.period_start)
        ],
    }


def billing_alerts_open(*, period_start: dt.datetime) -> QuerySet[Alert]:
    """This period's alerts nobody has acknowledged yet (the admin banner)."""
    return Alert.objects.filter(period_start=period_start, acknowledged_at__isnull=True).order_by(
        "fired_at", "pk"
    )


def billing_periods() -> QuerySet[BillingPeriod]:
    return BillingPeriod.objects.select_related("invoice").order_by("-start")


def billing_invoices() -> QuerySet[Invoice]:
    return (
        Invoice.objects.select_related("period")
        .prefetch_related("lines")
        .order_by("-period__start")
    )


def billing_daily_usage(*, since: dt.date) -> QuerySet[DailyUsage]:
    return DailyUsage.objects.filter(day__gte=since).order_by("day")


def billing_pending_approvals() -> QuerySet[PendingApproval]:
    return PendingApproval.objects.filter(status="pending").select_related("requested_by")


# What demoting contacts saves from the next period (hygiene, rotation, the savings report).


def billing_demotion_saving(*, demote: int, at: dt.datetime | None = None) -> dict:
    """What scheduling `demote` more contacts non-marketing now saves on a month's invoice
    from the next period: the invoice at the next period's expected opening count (this
    period's live count less its pending downgrades, as the dashboard's pending saving)
    with and without them, priced by `price_for_peak`."""
    usage = usage_current(at=at or timezone.now())
    subscription = Subscription.load()
    opening = max(0, usage.live_count - usage.pending_downgrades)
    after = max(0, opening - demote)
    total = price_for_peak(peak=opening, subscription=subscription).total
    total_after = price_for_peak(peak=after, subscription=subscription).total
    return {
        "demote": demote,
        "next_opening": opening,
        "next_opening_after": after,
        "next_total": total,
        "next_total_after": total_after,
        "saving": total - total_after,
        "currency": subscription.currency,
        "next_update_date": usage.next_update.isoformat(),
    }
