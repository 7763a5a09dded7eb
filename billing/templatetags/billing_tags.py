"""Template tags of the billing admin: money in minor units, and the alert banner.

The banner is on every admin page (templates/admin/base_site.html), so it must be
cheap and never fail for want of data: one query reads this period's open alerts
together with the account's calendar (three primary-key subqueries), and nothing at
all is read for a user who may not see alerts. With no account row yet, the calendar
is the account's defaults — the row Account.load() would create.
"""

from __future__ import annotations

from django import template
from django.db.models import Subquery
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from billing.admin.base import DASHBOARD_PERMISSION, format_count
from billing.models import Alert
from billing.money import format_money
from billing.selectors import billing_usage
from crm.calendar import BillingCalendar
from crm.models import Account

register = template.Library()

# Messages the banner lists; the rest are counted ("and 3 more").
BANNER_MESSAGES = 3
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
    rows = list(
        Alert.objects.filter(acknowledged_at__isnull=True, period_start__lte=now)
        .annotate(
            account_update_day=_account_field("update_day"),
            account_yearly_plan=_account_field("yearly_plan"),
            account_time_zone=_account_field("time_zone"),
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
    except NoReverseMatch:  # a site without the billing admin
        url = ""
    return {
        "alerts": alerts[:BANNER_MESSAGES],
        "count": len(alerts),
        "more": max(0, len(alerts) - BANNER_MESSAGES),
        "capped": len(alerts) >= BANNER_ROWS,
        "url": url,
    }


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
