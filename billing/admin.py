"""The billing admin: the subscription, the dashboard, periods, invoices, alerts and approvals.

Every row here except the subscription is written by the system (the close, the
alert listener, the guardrails), so those admins are read-only for everyone,
superusers included: nobody adds, edits or deletes a period, an invoice, a line
or a day of usage. The only writes are the ones the services offer —
acknowledging an alert, approving or rejecting a held change, closing the
periods — each behind its own permission.

The dashboard (`admin:billing_dashboard`, at <admin>/billing/dashboard/) is a view of
the Subscription admin, listed first under "Billing" on the admin index (see
`_add_dashboard`). Its chart is inline SVG drawn here, on the server: no JavaScript,
nothing from a CDN.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format, number_format
from django.utils.html import format_html, format_html_join

from billing.guardrails import (
    billing_approval_approve,
    billing_approval_reject,
    billing_cost_preview,
)
from billing.models import (
    Alert,
    BillingPeriod,
    DailyUsage,
    Invoice,
    InvoiceLine,
    Subscription,
)
from billing.pricing import format_money
from billing.selectors import (
    billing_daily_usage,
    billing_invoices,
    billing_pending_approvals,
    billing_periods,
    billing_usage,
)
from billing.services import billing_alert_acknowledge, billing_close_periods
from contacts.models import StatusSourceType
from contacts.status.models import (
    ApprovalStatus,
    PendingApproval,
)
from crm.admin import (
    AccountTimeZoneMixin,
    ReadOnlyAdminMixin,
    SingletonAdmin,
    account_time_zone,
)
from crm.calendar import BillingCalendar
from crm.models import Account

DASHBOARD_PERMISSION = "billing.view_subscription"
CLOSE_PERMISSION = "billing.change_subscription"
ACKNOWLEDGE_PERMISSION = "billing.change_alert"
APPROVE_PERMISSION = "billing.approve_overage"
# The billing pages the dashboard links to, for users who may see them.
DASHBOARD_PAGES = [
    ("Billing periods", "billing", "billingperiod"),
    ("Invoices", "billing", "invoice"),
    ("Daily usage", "billing", "dailyusage"),
    # Held changes are contacts' (checked under the usage lock); billing decides them.
    ("Pending approvals", "contacts", "pendingapproval"),
    ("Alerts", "billing", "alert"),
    ("Subscription and prices", "billing", "subscription"),
]


def format_count(value: int | None) -> str:
    return "—" if value is None else number_format(value, force_grouping=True)


def format_day(value: dt.datetime) -> str:
    """An instant as a day in the active time zone (the account's, in these views)."""
    return date_format(timezone.localtime(value), "j M Y")


def format_instant(value: dt.datetime | None) -> str:
    return "—" if value is None else date_format(timezone.localtime(value), "j M Y, H:i")


MINOR_UNITS_HELP = "In minor units of the currency (cents for USD): {example}."


class ReadOnlyBillingAdmin(ReadOnlyAdminMixin, AccountTimeZoneMixin, admin.ModelAdmin):
    """Users with the model's view permission see the list and a read-only detail page;
    a POST to the detail page is refused (403) by Django's change view."""


# --- the subscription and the dashboard -------------------------------------------


@admin.register(Subscription)
class SubscriptionAdmin(SingletonAdmin):
    fieldsets = [
        (None, {"fields": ["included_contacts", "currency"]}),
        (
            "Prices",
            {
                "fields": ["base_price", "block_size", "block_price", "price_summary"],
                "description": (
                    "Money is stored in integer minor units of the currency. Each period is "
                    "billed the base price plus one block price for every started block of "
                    "marketing contacts above the tier, counted at the period's peak."
                ),
            },
        ),
        ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    readonly_fields = ["price_summary", "created_at", "updated_at"]
    list_display = ["__str__", "included_contacts", "base_price", "block_size", "block_price"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["help_texts"] = {
            "base_price": "Monthly base price. "
            + MINOR_UNITS_HELP.format(example="80000 = 800.00 USD"),
            "block_price": "Price of one overage block a month. "
            + MINOR_UNITS_HELP.format(example="22500 = 225.00 USD"),
            "block_size": "Marketing contacts per overage block (at least 1).",
            "included_contacts": "Marketing contacts included in the base price (the tier).",
            "currency": "ISO 4217 code, e.g. USD, EUR, SEK.",
        }
        return super().get_form(request, obj, change=change, **kwargs)

    @admin.display(description="In words")
    def price_summary(self, obj: Subscription) -> str:
        if obj is None or obj.pk is None:
            return "-"
        return (
            f"{format_money(obj.base_price, obj.currency)} a month for up to "
            f"{obj.included_contacts:,} marketing contacts, then "
            f"{format_money(obj.block_price, obj.currency)} per {obj.block_size:,} more."
        )

    def dashboard_view(self, request):
        if not request.user.has_perm(DASHBOARD_PERMISSION):
            raise PermissionDenied
        now = timezone.now()
        usage = billing_usage(at=now)
        subscription = Subscription.load()
        currency = usage["currency"]
        estimate, forecast = usage["estimate"], usage["forecast"]
        calendar = BillingCalendar.for_account()
        chart = usage_chart(
            calendar=calendar,
            now=now,
            tier=usage["included_contacts"],
            block_size=usage["block_size"],
        )
        site = self.admin_site.name
        context = {
            **self.admin_site.each_context(request),
            "title": "Billing dashboard",
            "subtitle": None,
            "opts": self.opts,
            "usage": usage,
            "subscription": subscription,
            "money": {
                "estimate_base": format_money(estimate["base"], currency),
                "estimate_overage": format_money(estimate["overage"], currency),
                "estimate_total": format_money(estimate["total"], currency),
                "forecast_overage": format_money(forecast["total"] - estimate["base"], currency),
                "forecast_total": format_money(forecast["total"], currency),
                "pending_saving": format_money(usage["pending_saving"], currency),
                "block_price": format_money(subscription.block_price, currency),
            },
            "next_block": usage["overage_blocks"] + 1,
            "pending_approvals": billing_pending_approvals().count(),
            # The page lists the alerts itself: no banner repeating them above.
            "hide_billing_alert_banner": True,
            "chart": chart,
            "links": {
                "alerts": reverse(f"{site}:billing_alert_changelist")
                + "?acknowledged=no&period=current",
                "approvals": reverse(f"{site}:contacts_pendingapproval_changelist")
                + f"?status__exact={ApprovalStatus.PENDING}",
                "close": reverse(f"{site}:billing_billingperiod_close"),
            },
            "pages": [
                (label, reverse(f"{site}:{app}_{model}_changelist"))
                for label, app, model in DASHBOARD_PAGES
                if request.user.has_perm(f"{app}.view_{model}")
                or request.user.has_perm(f"{app}.change_{model}")
            ],
            "can_close": request.user.has_perm(CLOSE_PERMISSION),
            "can_view_alerts": request.user.has_perm("billing.view_alert"),
            "can_view_approvals": request.user.has_perm("contacts.view_pendingapproval"),
        }
        request.current_app = site
        with timezone.override(calendar.tz):
            response = TemplateResponse(request, "admin/billing/dashboard.html", context)
            response.render()
        return response


def _add_dashboard(site) -> None:
    """Serve the dashboard at <admin>/billing/dashboard/ and list it first under "Billing"
    on the admin index, the app page and the sidebar.

    The dashboard is a view, not a model: Django's app list only lists models, and a
    ModelAdmin's URLs sit under its model's (the sidebar would then highlight that model
    too). Wrapping the site's get_urls and get_app_list is the one place that feeds all
    of them; a project AdminSite subclass in crm/ would be the tidier home for this.
    """
    if getattr(site.get_app_list, "lists_billing_dashboard", False):
        return
    original_urls, original_app_list = site.get_urls, site.get_app_list

    def get_urls():
        view = site.get_model_admin(Subscription).dashboard_view
        # Before Django's own: its final catch-all view would otherwise answer 404.
        return [
            path("billing/dashboard/", site.admin_view(view), name="billing_dashboard"),
            *original_urls(),
        ]

    def get_app_list(request, app_label=None):
        app_list = original_app_list(request, app_label)
        if not request.user.has_perm(DASHBOARD_PERMISSION):
            return app_list
        for app in app_list:
            if app["app_label"] == "billing":
                app["models"].insert(
                    0,
                    {
                        "model": None,
                        "name": "Dashboard",
                        "object_name": "Dashboard",
                        "perms": {"add": False, "change": False, "delete": False, "view": True},
                        "admin_url": reverse(f"{site.name}:billing_dashboard"),
                        "add_url": None,
                        "view_only": True,
                    },
                )
        return app_list

    get_app_list.lists_billing_dashboard = True
    site.get_urls, site.get_app_list = get_urls, get_app_list


_add_dashboard(admin.site)


# --- the chart: daily peak against the tier, server-side SVG --------------------------

CHART_PERIODS = 12
CHART_WIDTH = 960
CHART_HEIGHT = 300
CHART_LEFT, CHART_RIGHT, CHART_TOP, CHART_BOTTOM = 64, 110, 16, 44
CHART_TICKS = 5
CHART_BLOCK_LINES = 4  # block boundaries drawn above the tier, at most


def _nice_step(rough: float) -> int:
    """The smallest of 1, 2, 5 × 10^k that is at least `rough` (axis ticks people can read)."""
    if rough <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(rough))
    for multiple in (1, 2, 5, 10):
        if rough <= multiple * magnitude:
            return int(multiple * magnitude)
    return int(10 * magnitude)


def _num(value: float) -> str:
    """A coordinate for an SVG attribute: never localised ("12,5" would break the drawing)."""
    return f"{value:.1f}"


def chart_periods(calendar: BillingCalendar, now: dt.datetime, count: int = CHART_PERIODS):
    """The `count` periods ending with the current one, oldest first, as (start, end)."""
    periods = [calendar.period_bounds(now)]
    while len(periods) < count:
        start = periods[0][0]
        periods.insert(0, calendar.period_bounds(start - dt.timedelta(microseconds=1)))
    return periods


@dataclass
class UsageChart:
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    plot: dict = field(default_factory=dict)
    bars: list = field(default_factory=list)
    y_ticks: list = field(default_factory=list)
    periods: list = field(default_factory=list)
    tier: dict = field(default_factory=dict)
    block_lines: list = field(default_factory=list)
    today: dict | None = None
    summary: list = field(default_factory=list)
    highest: int = 0
    first_day: dt.date | None = None
    last_day: dt.date | None = None
    days_recorded: int = 0


def usage_chart(
    *, calendar: BillingCalendar, now: dt.datetime, tier: int, block_size: int
) -> UsageChart:
    """Bars of each day's maximum billable count (DailyUsage.max_count) over the last 12
    periods, a line at the tier, dashed lines where overage blocks start, the period
    boundaries and today. Geometry is computed here; the template only draws it."""
    tz = calendar.tz
    periods = chart_periods(calendar, now)
    first_day = periods[0][0].astimezone(tz).date()
    end_day = periods[-1][1].astimezone(tz).date()  # exclusive
    days = max(1, (end_day - first_day).days)
    rows = list(
        billing_daily_usage(since=first_day).filter(day__lt=end_day).values_list("day", "max_count")
    )
    highest = max((count for _, count in rows), default=0)

    left, top = CHART_LEFT, CHART_TOP
    plot_w = CHART_WIDTH - CHART_LEFT - CHART_RIGHT
    plot_h = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    bottom = top + plot_h
    ceiling = max(highest, tier, 1) * 1.08
    step = _nice_step(ceiling / CHART_TICKS)
    y_max = step * math.ceil(ceiling / step)

    def x_of(day: dt.date) -> float:
        return left + (day - first_day).days * plot_w / days

    def y_of(value: int) -> float:
        return bottom - value * plot_h / y_max

    chart = UsageChart(
        plot={
            "left": _num(left),
            "right": _num(left + plot_w),
            "top": _num(top),
            "bottom": _num(bottom),
            "width": _num(plot_w),
            "height": _num(plot_h),
            "label_x": _num(left + plot_w + 6),
            "axis_label_y": _num(bottom + 34),
        },
        highest=highest,
        first_day=first_day,
        last_day=end_day - dt.timedelta(days=1),
        days_recorded=len(rows),
    )
    day_w = plot_w / days
    bar_w = max(day_w * 0.8, 1.0)
    for day, count in rows:
        y = y_of(count)
        chart.bars.append(
            {
                "x": _num(x_of(day) + (day_w - bar_w) / 2),
                "y": _num(y),
                "width": _num(bar_w),
                "height": _num(bottom - y),
                "over": count > tier,
                "title": f"{date_format(day, 'j M Y')}: at most {format_count(count)} marketing",
            }
        )
    chart.y_ticks = [
        {"y": _num(y_of(value)), "label": format_count(value), "text_y": _num(y_of(value) + 4)}
        for value in range(0, y_max + 1, step)
    ]
    per_period_max: dict[int, int] = {}
    for day, count in rows:
        for index, (start, end) in enumerate(periods):
            if start.astimezone(tz).date() <= day < end.astimezone(tz).date():
                per_period_max[index] = max(per_period_max.get(index, 0), count)
                break
    for index, (start, end) in enumerate(periods):
        start_day, stop_day = start.astimezone(tz).date(), end.astimezone(tz).date()
        x0, x1 = x_of(start_day), x_of(stop_day)
        chart.periods.append(
            {
                "x": _num(x0),
                "width": _num(x1 - x0),
                "label_x": _num((x0 + x1) / 2),
                "label_y": _num(bottom + 16),
                "label": date_format(start_day, "M Y"),
                "current": index == len(periods) - 1,
            }
        )
        chart.summary.append(
            {
                "start": start,
                "end": end,
                "highest": per_period_max.get(index),
                "current": index == len(periods) - 1,
            }
        )
    chart.tier = {"y": _num(y_of(tier)), "text_y": _num(y_of(tier) + 4), "value": tier}
    if block_size > 0:
        for k in range(1, CHART_BLOCK_LINES + 1):
            value = tier + k * block_size
            if value > y_max:
                break
            chart.block_lines.append(
                {
                    "y": _num(y_of(value)),
                    "text_y": _num(y_of(value) + 4),
                    "label": f"{format_count(value)}: {k + 1} blocks",
                }
            )
    today = now.astimezone(tz).date()
    chart.today = {"x": _num(x_of(today) + day_w / 2), "label_y": _num(top + 10)}
    return chart


# --- periods ---------------------------------------------------------------------------


def _invoice_of(period: BillingPeriod) -> Invoice | None:
    try:
        return period.invoice
    except Invoice.DoesNotExist:
        return None


@admin.register(BillingPeriod)
class BillingPeriodAdmin(ReadOnlyBillingAdmin):
    list_display = [
        "start_display",
        "end_display",
        "status",
        "opening",
        "peak",
        "counter_peak",
        "closing",
        "discrepancy_display",
        "invoice_link",
    ]
    list_display_links = ["start_display"]
    # No filter sidebar: twelve rows a year, and the table needs the width.
    list_select_related = ["invoice"]
    fields = [
        "start",
        "end",
        "status",
        "opening_count",
        "peak_count",
        "counter_peak_count",
        "billed_peak_count",
        "closing_count",
        "discrepancy_display",
        "closed_at",
        "invoice_link",
    ]
    readonly_fields = fields

    @admin.display(description="Start", ordering="start")
    def start_display(self, obj: BillingPeriod) -> str:
        return format_day(obj.start)

    @admin.display(description="End (next update)", ordering="end")
    def end_display(self, obj: BillingPeriod) -> str:
        return format_day(obj.end)

    @admin.display(description="Opening")
    def opening(self, obj: BillingPeriod) -> str:
        return format_count(obj.opening_count)

    @admin.display(description="Peak (ledger)", ordering="peak_count")
    def peak(self, obj: BillingPeriod) -> str:
        return format_count(obj.peak_count)

    @admin.display(description="Peak (counters)")
    def counter_peak(self, obj: BillingPeriod) -> str:
        return format_count(obj.counter_peak_count)

    @admin.display(description="Closing")
    def closing(self, obj: BillingPeriod) -> str:
        return format_count(obj.closing_count)

    def get_queryset(self, request):
        queryset = billing_periods()
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    @admin.display(description="Discrepancy")
    def discrepancy_display(self, obj: BillingPeriod) -> str:
        if not obj.discrepancy:
            return "—"
        return (
            f"Ledger replay peak {format_count(obj.discrepancy.get('ledger_peak'))} ≠ "
            f"counter peak {format_count(obj.discrepancy.get('counter_peak'))}: no invoice "
            "until they agree"
        )

    @admin.display(description="Invoice")
    def invoice_link(self, obj: BillingPeriod):
        invoice = _invoice_of(obj)
        if invoice is None:
            return "—"
        url = reverse(f"{self.admin_site.name}:billing_invoice_change", args=[quote(invoice.pk)])
        return format_html(
            '<a href="{}">{}</a> ({}, {})',
            url,
            invoice.number,
            invoice.get_status_display().lower(),
            format_money(invoice.total, invoice.currency),
        )

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_close": request.user.has_perm(CLOSE_PERMISSION),
            "close_url": reverse(f"{self.admin_site.name}:billing_billingperiod_close"),
        }
        return super().changelist_view(request, extra_context)

    def get_urls(self):
        return [
            path(
                "close/",
                self.admin_site.admin_view(self.close_view),
                name="billing_billingperiod_close",
            ),
            *super().get_urls(),
        ]

    def close_view(self, request):
        """GET: a dry run of the close (nothing written). POST: close, and show the outcomes."""
        if not request.user.has_perm(CLOSE_PERMISSION):
            raise PermissionDenied
        if request.method not in ("GET", "POST"):
            return HttpResponseNotAllowed(["GET", "POST"])
        confirmed = request.method == "POST"
        outcomes = billing_close_periods(dry_run=not confirmed)
        if confirmed:
            closed = [o for o in outcomes if o.status == "closed"]
            held = [o for o in outcomes if o.status == "held"]
            if closed:
                self.message_user(
                    request,
                    f"Closed {len(closed)} period{'s' if len(closed) != 1 else ''}: "
                    + ", ".join(o.invoice_number for o in closed)
                    + " written.",
                    messages.SUCCESS,
                )
            if held:
                self.message_user(
                    request,
                    f"{len(held)} period{'s' if len(held) != 1 else ''} held: the ledger replay "
                    "disagrees with the counters; no invoice was written for "
                    f"{'them' if len(held) != 1 else 'it'}.",
                    messages.ERROR,
                )
            if not outcomes:
                self.message_user(
                    request, "No period had ended unclosed; nothing to close.", messages.INFO
                )
        rows = [
            {
                "outcome": outcome,
                "total": format_money(outcome.total, outcome.currency) if outcome.currency else "—",
            }
            for outcome in outcomes
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Billing periods closed" if confirmed else "Close billing periods?",
            "subtitle": None,
            "opts": self.opts,
            "rows": rows,
            "confirmed": confirmed,
            "would_close": sum(1 for o in outcomes if o.status == "would_close"),
            "would_hold": sum(1 for o in outcomes if o.status == "held"),
            "invoices_url": reverse(f"{self.admin_site.name}:billing_invoice_changelist"),
        }
        request.current_app = self.admin_site.name
        with timezone.override(account_time_zone()):
            response = TemplateResponse(request, "admin/billing/billingperiod/close.html", context)
            response.render()
        return response


# --- invoices --------------------------------------------------------------------------


class InvoiceLineInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = InvoiceLine
    fields = ["kind", "description", "amount_display", "details_display"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    @admin.display(description="Amount")
    def amount_display(self, obj: InvoiceLine) -> str:
        return format_money(obj.amount, obj.invoice.currency)

    @admin.display(description="Computed from")
    def details_display(self, obj: InvoiceLine):
        if not obj.details:
            return "—"
        return format_html_join(
            ", ",
            "{}: {}",
            (
                (key.replace("_", " "), format_count(value) if isinstance(value, int) else value)
                for key, value in obj.details.items()
            ),
        )


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyBillingAdmin):
    list_display = [
        "number",
        "period_display",
        "status",
        "total_display",
        "created_at",
        "finalise_after",
        "finalised_at",
    ]
    list_filter = ["status"]
    list_select_related = ["period"]
    search_fields = ["=number"]
    search_help_text = "An exact invoice number, e.g. INV-20261101."
    fields = [
        "number",
        "period_display",
        "status",
        "total_display",
        "created_at",
        "finalise_after",
        "finalised_at",
    ]
    readonly_fields = fields
    inlines = [InvoiceLineInline]

    def get_queryset(self, request):
        queryset = billing_invoices()
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    @admin.display(description="Period", ordering="period__start")
    def period_display(self, obj: Invoice):
        url = reverse(
            f"{self.admin_site.name}:billing_billingperiod_change", args=[quote(obj.period_id)]
        )
        period = obj.period
        return format_html(
            '<a href="{}">{} – {}</a>', url, format_day(period.start), format_day(period.end)
        )

    @admin.display(description="Total", ordering="total")
    def total_display(self, obj: Invoice) -> str:
        return format_money(obj.total, obj.currency)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["invoice_note"] = (
                "This invoice is final: it never changes. A later correction to its period "
                "appears as an adjustment line on the next invoice."
                if obj.status == "final"
                else "This invoice is a draft until "
                + date_format(timezone.localtime(obj.finalise_after), "j F Y, H:i")
                + ": a change to its period before then re-prices it; then it becomes final."
            )
        return super().render_change_form(
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )


# --- alerts ----------------------------------------------------------------------------


def current_period_start(now: dt.datetime | None = None) -> dt.datetime:
    return BillingCalendar.for_account().period_bounds(now or timezone.now())[0]


class AcknowledgedFilter(admin.SimpleListFilter):
    title = "acknowledged"
    parameter_name = "acknowledged"

    def lookups(self, request, model_admin):
        return [("no", "Not yet"), ("yes", "Acknowledged")]

    def queryset(self, request, queryset):
        if self.value() == "no":
            return queryset.filter(acknowledged_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(acknowledged_at__isnull=False)
        return queryset


class AlertPeriodFilter(admin.SimpleListFilter):
    title = "period"
    parameter_name = "period"

    def lookups(self, request, model_admin):
        return [("current", "This period"), ("earlier", "Earlier periods")]

    def queryset(self, request, queryset):
        if self.value() == "current":
            return queryset.filter(period_start=current_period_start())
        if self.value() == "earlier":
            return queryset.filter(period_start__lt=current_period_start())
        return queryset


@admin.register(Alert)
class AlertAdmin(ReadOnlyBillingAdmin):
    list_display = [
        "message",
        "threshold_display",
        "fired",
        "period",
        "acknowledged",
    ]
    list_display_links = ["message"]
    list_filter = [AcknowledgedFilter, AlertPeriodFilter, "kind"]
    fields = [
        "message",
        "kind",
        "threshold_display",
        "period_start",
        "peak_count",
        "fired_at",
        "recipients",
        "acknowledged_at",
    ]
    readonly_fields = fields
    actions = ["acknowledge_action"]

    def has_acknowledge_permission(self, request) -> bool:
        return request.user.has_perm(ACKNOWLEDGE_PERMISSION)

    @admin.display(description="Threshold")
    def threshold_display(self, obj: Alert) -> str:
        if obj.kind == "threshold":
            return f"{obj.threshold}% of the tier"
        if obj.kind == "block":
            return f"block {obj.threshold}"
        if obj.kind == "spike":
            return "within an hour"
        return "—"

    @admin.display(description="Fired", ordering="fired_at")
    def fired(self, obj: Alert) -> str:
        return format_instant(obj.fired_at)

    @admin.display(description="Period", ordering="period_start")
    def period(self, obj: Alert) -> str:
        return "from " + format_day(obj.period_start)

    @admin.display(description="Acknowledged", boolean=True, ordering="acknowledged_at")
    def acknowledged(self, obj: Alert) -> bool:
        return obj.acknowledged_at is not None

    @admin.action(description="Acknowledge", permissions=["acknowledge"])
    def acknowledge_action(self, request, queryset):
        now = timezone.now()
        done = 0
        for alert in queryset.filter(acknowledged_at__isnull=True):
            billing_alert_acknowledge(alert=alert, at=now)
            done += 1
        already = queryset.count() - done
        text = f"{done} alert{'s' if done != 1 else ''} acknowledged"
        text += f"; {already} already were." if already else "."
        self.message_user(request, text, messages.SUCCESS if done else messages.INFO)


# --- daily usage -----------------------------------------------------------------------


@admin.register(DailyUsage)
class DailyUsageAdmin(ReadOnlyBillingAdmin):
    list_display = ["day", "max_count", "became_marketing"]
    fields = ["day", "max_count", "became_marketing"]
    readonly_fields = fields
    list_per_page = 100


# --- pending approvals ---------------------------------------------------------------


@admin.register(PendingApproval)
class PendingApprovalAdmin(ReadOnlyBillingAdmin):
    # The model is contacts' (held under the usage lock); its pages are billing's.
    change_form_template = "admin/billing/pendingapproval/change_form.html"
    list_display = [
        "id",
        "requested",
        "requested_by",
        "source_display",
        "new_marketing",
        "cost_display",
        "status",
        "decision",
    ]
    list_display_links = ["id", "requested"]
    list_filter = ["status"]
    list_select_related = ["requested_by", "decided_by"]
    fields = [
        "status",
        "reason",
        "requested_at",
        "requested_by",
        "operation",
        "source_display",
        "contacts_display",
        "new_marketing",
        "live_after",
        "cost_detail",
        "decided_by",
        "decided_at",
        "result_display",
    ]
    readonly_fields = fields
    actions = ["approve_action", "reject_action"]

    def has_approve_permission(self, request) -> bool:
        return request.user.has_perm(APPROVE_PERMISSION)

    def get_changelist_instance(self, request):
        # One read of the prices for the whole page, not one per row.
        changelist = super().get_changelist_instance(request)
        pricing = (Subscription.load(), Account.load())
        for approval in changelist.result_list:
            approval.pricing = pricing
        return changelist

    @staticmethod
    def _cost(obj: PendingApproval) -> dict:
        """What approving it would cost: priced from the counters it was held at."""
        held_at = obj.cost or {}
        if "peak_count" not in held_at:
            return held_at
        subscription, account = getattr(obj, "pricing", (None, None))
        return billing_cost_preview(
            live_count=held_at["live_count"],
            peak_count=held_at["peak_count"],
            would_add=obj.new_marketing,
            subscription=subscription,
            account=account,
        )

    @admin.display(description="Requested", ordering="requested_at")
    def requested(self, obj: PendingApproval) -> str:
        return format_instant(obj.requested_at)

    @admin.display(description="Decided")
    def decision(self, obj: PendingApproval) -> str:
        if obj.decided_at is None:
            return "—"
        return f"{format_instant(obj.decided_at)} by {obj.decided_by or 'a deleted user'}"

    @admin.display(description="Source")
    def source_display(self, obj: PendingApproval) -> str:
        kind = obj.source_type
        parts = [StatusSourceType(kind).label if kind in StatusSourceType.values else kind]
        if obj.source_id:
            parts.append(f"#{obj.source_id}")
        if obj.source_name:
            parts.append(f"“{obj.source_name}”")
        return " ".join(parts)

    @admin.display(description="Contacts")
    def contacts_display(self, obj: PendingApproval) -> str:
        if obj.contact_ids is not None:
            return f"{len(obj.contact_ids):,} contacts"
        return "—"

    @admin.display(description="Invoice change")
    def cost_display(self, obj: PendingApproval) -> str:
        cost = self._cost(obj)
        if "invoice_delta" not in cost:
            return "—"
        delta = cost["invoice_delta"]
        if not delta:
            return "no extra cost"
        return "+" + format_money(delta, cost.get("currency", ""))

    @admin.display(description="Cost")
    def cost_detail(self, obj: PendingApproval):
        cost = self._cost(obj)
        if "invoice_delta" not in cost:
            return "—"
        currency = cost.get("currency", "")
        rows = [
            ("Peak", format_count(cost["peak_before"]), format_count(cost["peak_after"])),
            ("Overage blocks", cost["blocks_before"], cost["blocks_after"]),
            (
                "This period's invoice",
                format_money(cost["total_before"], currency),
                format_money(cost["total_after"], currency),
            ),
        ]
        table = format_html_join("", "<tr><th>{}</th><td>{} → {}</td></tr>", rows)
        return format_html(
            '<table class="approval-cost">{}<tr><th>Difference</th><td>{}</td></tr></table>',
            table,
            self.cost_display(obj),
        )

    @admin.display(description="Result")
    def result_display(self, obj: PendingApproval) -> str:
        result = obj.result or {}
        if not result:
            return "—"
        if "error" in result:
            return f"Failed: {result['error']}"
        keys = ("matched", "changed", "cancelled", "already")
        return ", ".join(f"{key} {result[key]:,}" for key in keys if key in result)

    # --- decisions

    def _decide(self, request, approval: PendingApproval, decision: str) -> None:
        if approval.status != ApprovalStatus.PENDING:
            self.message_user(
                request,
                f"Approval #{approval.pk} was already decided "
                f"({approval.get_status_display().lower()}); nothing was done.",
                messages.WARNING,
            )
            return
        if decision == "approve":
            approval = billing_approval_approve(approval=approval, user=request.user)
            if approval.status == ApprovalStatus.APPROVED:
                result = approval.result
                self.message_user(
                    request,
                    f"Approval #{approval.pk} approved and run: {result.get('changed', 0):,} "
                    f"contacts are now marketing, {result.get('cancelled', 0):,} pending "
                    f"downgrades were cancelled. Live count {result.get('live_count', 0):,}, "
                    f"this period's peak {result.get('peak_count', 0):,}.",
                    messages.SUCCESS,
                )
            else:
                self.message_user(
                    request,
                    f"Approval #{approval.pk} was approved but the change failed: "
                    f"{approval.result.get('error', 'unknown error')}",
                    messages.ERROR,
                )
        else:
            billing_approval_reject(approval=approval, user=request.user)
            self.message_user(
                request,
                f"Approval #{approval.pk} rejected: nothing was changed.",
                messages.SUCCESS,
            )

    @admin.action(description="Approve and run", permissions=["approve"])
    def approve_action(self, request, queryset):
        for approval in queryset.order_by("requested_at"):
            self._decide(request, approval, "approve")

    @admin.action(description="Reject", permissions=["approve"])
    def reject_action(self, request, queryset):
        for approval in queryset.order_by("requested_at"):
            self._decide(request, approval, "reject")

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/decide/",
                self.admin_site.admin_view(self.decide_view),
                name="{}_{}_decide".format(*info),
            ),
            *super().get_urls(),
        ]

    def decide_view(self, request, object_id):
        """POST only, from the detail page's buttons: approve and run, or reject."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_approve_permission(request):
            raise PermissionDenied
        approval = self.get_object(request, unquote(object_id))
        if approval is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        decision = request.POST.get("decision")
        if decision not in ("approve", "reject"):
            raise PermissionDenied
        self._decide(request, approval, decision)
        return HttpResponseRedirect(
            reverse(
                f"{self.admin_site.name}:contacts_pendingapproval_change",
                args=[quote(approval.pk)],
            )
        )

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["can_decide"] = (
                obj.status == ApprovalStatus.PENDING and self.has_approve_permission(request)
            )
            context["decide_url"] = reverse(
                f"{self.admin_site.name}:contacts_pendingapproval_decide", args=[quote(obj.pk)]
            )
        return super().render_change_form(
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )
