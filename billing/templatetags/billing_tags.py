"""Template tags of the billing admin: money in minor units, and the alert banner.

The banner is on every admin page (templates/admin/base_site.html), so it must be
cheap and never fail for want of data: one query reads this period's open alerts
together with the account's calendar (three primary-key subqueries), and nothing at
all is read for a user who may not see alerts. With no account row yet, the calendar
is the account's defaults — the row Account.load() would create.
"""

from __future__ import annotations

from django import template
from django.db.models import OuterRef, Subquery
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from billing.admin.base import DASHBOARD_PERMISSION, format_count
from billing.models import Alert, AlertKind, Subscription
from billing.money import format_money
from billing.selectors import billing_usage
from contacts.status.models import PeriodUsage
from crm.calendar import BillingCalendar
from crm.models import Account

register = template.Library()

# Rows one banner query reads at most (this period's alerts come first).
BANNER_ROWS = 50
BANNER_PERMISSION = "billing.view_alert"


@register.filter
def money(amount, currency: str = "") -> str:
    """{{ invoice.total|money:invoice.currency }} → "1,025.00 USD"."""
    if amount is None or amount == "":
        return "—"
    return format_money(int(amount), currency or "")


@register.filter
def signed_money(amount, currency: str = "") -> str:
    """Like `money`, with a "+" on positive amounts (a difference)."""
    if amount is None or amount == "":
        return "—"
    text = format_money(int(amount), currency or "")
    return f"+{text}" if int(amount) > 0 else text


def _account_field(name: str):
    return Subquery(Account.objects.filter(pk=Account.SINGLETON_PK).values(name)[:1])


def open_alerts_this_period(*, now=None) -> list[Alert]:
    """This period's unacknowledged alerts, oldest first, in one query.

    The same rows as billing_alerts_open(period_start=usage_current().period_start),
    which would take three queries (the account, the usage row, the alerts). Ordered by
    period start, newest first, this period's alerts come before any older one (the
    alert_once_per_period index starts with period_start); the account's calendar
    rides along, so the period start is known without another round trip.
    """
    now = now or timezone.now()
    usage = PeriodUsage.objects.filter(period_start=OuterRef("period_start"))
    rows = list(
        Alert.objects.filter(acknowledged_at__isnull=True, period_start__lte=now)
        .annotate(
            account_update_day=_account_field("update_day"),
            account_yearly_plan=_account_field("yearly_plan"),
            account_time_zone=_account_field("time_zone"),
            # Today's figures, so the banner never repeats a peak the alert saw and that
            # has moved since.
            now_peak=Subquery(usage.values("peak_count")[:1]),
            now_live=Subquery(usage.values("live_count")[:1]),
            now_included=Subquery(
                Subscription.objects.filter(pk=Subscription.SINGLETON_PK).values(
                    "included_contacts"
                )[:1]
            ),
        )
        .order_by("-period_start", "fired_at", "pk")[:BANNER_ROWS]
    )
    if not rows:
        return []
    first = rows[0]
    defaults = Account()
    account = Account(
        update_day=first.account_update_day or defaults.update_day,
        yearly_plan=bool(first.account_yearly_plan),
        time_zone=first.account_time_zone or defaults.time_zone,
    )
    start, _ = BillingCalendar.for_account(account).period_bounds(now)
    return [alert for alert in rows if alert.period_start == start]


@register.inclusion_tag("admin/billing/alert_banner.html", takes_context=True)
def billing_alert_banner(context) -> dict:
    request = context.get("request")
    user = getattr(request, "user", None)
    if (
        user is None
        or context.get("is_popup")
        or context.get("hide_billing_alert_banner")
        or not (user.is_active and user.is_staff and user.has_perm(BANNER_PERMISSION))
    ):
        return {"alerts": []}
    alerts = open_alerts_this_period()
    if not alerts:
        return {"alerts": []}
    try:
        url = reverse("admin:billing_alert_changelist") + "?acknowledged=no&period=current"
        dashboard_url = reverse("admin:billing_dashboard")
    except NoReverseMatch:  # a site without the billing admin
        url = dashboard_url = ""
    latest = alerts[0]
    included = latest.now_included
    return {
        "alerts": alerts,
        "count": len(alerts),
        "capped": len(alerts) >= BANNER_ROWS,
        "summary": alerts_summary(alerts),
        "peak": format_count(latest.now_peak or 0),
        "live": format_count(latest.now_live or 0),
        "live_count": latest.now_live or 0,
        "included": format_count(included) if included is not None else None,
        "url": url,
        "dashboard_url": dashboard_url,
    }


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def alerts_summary(alerts: list[Alert]) -> str:
    """One sentence for a period's open alerts, grouped by kind: "75%, 90% and 100% of the
    tier reached; overage block 1 started." """
    by_kind: dict[str, list[int]] = {}
    for alert in alerts:
        by_kind.setdefault(alert.kind, []).append(alert.threshold)
    parts = []
    if percents := sorted(by_kind.get(AlertKind.THRESHOLD, [])):
        parts.append(_and([f"{p}%" for p in percents]) + " of the tier reached")
    if blocks := sorted(by_kind.get(AlertKind.BLOCK, [])):
        noun = "block" if len(blocks) == 1 else "blocks"
        parts.append(f"overage {noun} {_and([f'{b:,}' for b in blocks])} started")
    if spikes := len(by_kind.get(AlertKind.SPIKE, [])):
        parts.append(
            "a spike of new marketing contacts"
            if spikes == 1
            else f"{spikes} spikes of new marketing contacts"
        )
    if checks := len(by_kind.get(AlertKind.DISCREPANCY, [])):
        parts.append(
            "the ledger replay disagreed with the counters"
            + (f" ({checks} times)" if checks > 1 else "")
        )
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "."


@register.simple_tag
def cost_summary(cost: dict) -> dict:
    """The money of a status preview (`preview.extra["cost"]`), ready to print."""
    currency = cost.get("currency", "")
    delta = int(cost.get("invoice_delta") or 0)
    peak_rise = int(cost.get("peak_after", 0)) - int(cost.get("peak_before", 0))
    return {
        "adds_blocks": int(cost.get("blocks_after", 0)) - int(cost.get("blocks_before", 0)),
        "in_tier": not cost.get("blocks_before"),
        # Contacts that still fit, after this change, before the next block starts.
        "room_left": int(cost.get("headroom_before", 0)) - peak_rise if peak_rise > 0 else None,
        "delta": delta,
        "delta_display": signed_money(delta, currency),
        "before": format_money(int(cost.get("total_before", 0)), currency),
        "after": format_money(int(cost.get("total_after", 0)), currency),
    }


@register.inclusion_tag("admin/billing/home_panel.html", takes_context=True)
def billing_home_panel(context) -> dict:
    """The home page's billing figures: live count, peak, tier and headroom, estimate,
    next update date and open alerts, for users who may see the billing dashboard."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.has_perm(DASHBOARD_PERMISSION):
        return {"usage": None}
    usage = billing_usage(at=timezone.now())
    currency = usage["currency"]
    included = usage["included_contacts"]
    return {
        "usage": usage,
        "live": format_count(usage["live_count"]),
        "peak": format_count(usage["peak_count"]),
        "included": format_count(included),
        "headroom": format_count(usage["headroom"]),
        "over_tier": usage["peak_count"] > included,
        "percent_used": usage["percent_used"],
        "estimate": format_money(usage["estimate"]["total"], currency),
        "forecast": format_money(usage["forecast"]["total"], currency)
        if usage.get("forecast")
        else None,
        "hard_cap": format_count(usage["hard_cap"]) if usage["hard_cap"] else None,
        "next_update": usage["next_update_date"],
        "alerts": len(usage["alerts"]),
        "dashboard_url": reverse("admin:billing_dashboard"),
    }
