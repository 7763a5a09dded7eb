"""Alerts (DESIGN §1.4): thresholds of the tier, each new overage block, and spikes of new
marketing contacts — each fired once per period, at once, by email and as an admin banner.
Contacts' after-commit usage notice calls `billing_check_alerts` (BillingConfig.ready())."""

from __future__ import annotations

import datetime as dt
import math

from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from billing.models import (
    Alert,
    AlertKind,
    DailyUsage,
    HourlyUpgrades,
    Subscription,
)
from billing.pricing import overage_blocks
from contacts.hooks import UsageChange
from contacts.status.models import (
    LedgerAction,
    StatusChange,
)
from crm.rows import row_get_or_create


def threshold_crossings(*, peak: int, subscription: Subscription) -> list[tuple[str, int]]:
    """Every (kind, threshold) that a period whose peak is `peak` has reached."""
    reached = [
        (AlertKind.THRESHOLD, int(pct))
        for pct in subscription.alert_thresholds or []
        if peak >= math.ceil(subscription.included_contacts * int(pct) / 100)
    ]
    blocks = overage_blocks(
        peak=peak, included=subscription.included_contacts, block_size=subscription.block_size
    )
    reached.extend((AlertKind.BLOCK, block) for block in range(1, blocks + 1))
    return reached


def _recipients(subscription: Subscription) -> list[str]:
    raw = subscription.alert_recipients.replace(",", "\n").splitlines()
    return [address.strip() for address in raw if address.strip()]


def _alert_message(
    kind: str, threshold: int, *, peak: int, subscription: Subscription, detail: str
) -> str:
    if kind == AlertKind.THRESHOLD:
        return (
            f"Marketing contacts reached {threshold}% of the tier: peak {peak:,} of "
            f"{subscription.included_contacts:,} included."
        )
    if kind == AlertKind.BLOCK:
        return f"Overage block {threshold} started: peak {peak:,} marketing contacts this period."
    if kind == AlertKind.SPIKE:
        return f"Spike: more than {subscription.spike_threshold:,} contacts became marketing within an hour."
    return f"Billing held: {detail}."


def billing_fire_alerts(
    subscription: Subscription,
    period_start: dt.datetime,
    candidates: list[tuple[str, int]],
    *,
    peak: int,
    now: dt.datetime,
    detail: str = "",
) -> list[Alert]:
    """Create the alerts not yet fired this period; email them once. Safe to call concurrently:
    the unique constraint lets exactly one caller create each alert."""
    if not candidates:
        return []
    fired = set(Alert.objects.filter(period_start=period_start).values_list("kind", "threshold"))
    recipients = _recipients(subscription)
    created = []
    for kind, threshold in candidates:
        if (kind, threshold) in fired:
            continue
        alert, new = row_get_or_create(
            Alert,
            lookup={"period_start": period_start, "kind": kind, "threshold": threshold},
            defaults={
                "fired_at": now,
                "peak_count": peak,
                "message": _alert_message(
                    kind, threshold, peak=peak, subscription=subscription, detail=detail
                ),
                "recipients": ", ".join(recipients),
            },
        )
        if new:  # else another worker fired it first
            created.append(alert)
    if created and recipients:
        body = "\n".join(alert.message for alert in created)
        transaction.on_commit(
            lambda: send_mail(
                subject=f"Marketable billing alert: {created[-1].message[:80]}",
                message=body,
                from_email=None,
                recipient_list=recipients,
                fail_silently=True,
            )
        )
    return created


def _bump(model, key: dict, **increments) -> None:
    """Add to a counter row, creating it on first use (safe against a concurrent creator)."""
    from django.db.models import F
    from django.db.models.functions import Greatest

    updates = {}
    for name, (op, value) in increments.items():
        updates[name] = Greatest(F(name), value) if op == "max" else F(name) + value
    if model.objects.filter(**key).update(**updates):
        return
    first = {name: value for name, (_, value) in increments.items()}
    _, created = row_get_or_create(model, lookup=key, defaults=first)
    if not created:  # a concurrent caller created it first
        model.objects.filter(**key).update(**updates)


def billing_record_usage(*, change: UsageChange) -> None:
    """Keep the daily maximum and the hourly count of new marketing contacts."""
    _bump(
        DailyUsage,
        {"day": change.day},
        max_count=("max", change.live_count),
        became_marketing=("add", change.became_marketing),
    )
    if change.became_marketing:
        hour = change.at.replace(minute=0, second=0, microsecond=0)
        _bump(HourlyUpgrades, {"hour": hour}, count=("add", change.became_marketing))


def _spike_key(at: dt.datetime) -> int:
    """A spike alert's key: the hour it fired in (one alert an hour at most)."""
    return int(at.timestamp() // 3600)


def _upgrades_in_the_last_hour(
    at: dt.datetime, subscription: Subscription, period_start: dt.datetime
) -> int:
    """Exact count from the ledger, read only when the hourly counters say a spike is possible
    and this hour's spike alert has not fired yet (once it has, every upgrade of the hour
    would count the hour's ledger rows again for nothing: the alert fires once)."""
    hour = at.replace(minute=0, second=0, microsecond=0)
    rough = sum(
        HourlyUpgrades.objects.filter(hour__in=[hour, hour - dt.timedelta(hours=1)]).values_list(
            "count", flat=True
        )
    )
    if rough <= subscription.spike_threshold:
        return rough
    fired = Alert.objects.filter(
        period_start=period_start, kind=AlertKind.SPIKE, threshold=_spike_key(at)
    )
    if fired.exists():  # billing_alert unique (period_start, kind, threshold)
        return rough
    # statuschange_effective_idx
    return StatusChange.objects.filter(
        action=LedgerAction.UPGRADE,
        effective_at__gt=at - dt.timedelta(hours=1),
        effective_at__lte=at,
    ).count()


def billing_check_alerts(*, change: UsageChange) -> list[Alert]:
    """React to a committed status change: record usage; threshold, block and spike alerts, at once."""
    billing_record_usage(change=change)
    subscription = Subscription.load()
    candidates = threshold_crossings(peak=change.peak_count, subscription=subscription)
    if (
        change.became_marketing
        and _upgrades_in_the_last_hour(change.at, subscription, change.period_start)
        > subscription.spike_threshold
    ):
        candidates.append((AlertKind.SPIKE, _spike_key(change.at)))
    return billing_fire_alerts(
        subscription, change.period_start, candidates, peak=change.peak_count, now=change.at
    )


def billing_alert_acknowledge(*, alert: Alert, at: dt.datetime | None = None) -> Alert:
    Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
        acknowledged_at=at or timezone.now()
    )
    alert.refresh_from_db()
    return alert
