"""Billing periods (with the close page) and invoices with their lines, read-only."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join

from billing.admin.base import CLOSE_PERMISSION, ReadOnlyBillingAdmin, format_count, format_day
from billing.models import (
    BillingPeriod,
    Invoice,
    InvoiceLine,
)
from billing.money import format_money
from billing.selectors import (
    billing_invoices,
    billing_periods,
)
from billing.services import billing_close_periods
from crm.admin import (
    ReadOnlyAdminMixin,
)


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
        return TemplateResponse(request, "admin/billing/billingperiod/close.html", context)


def _detail_value(key: str, value, currency: str) -> str:
    """An invoice line's input as shown: prices as money, counts with separators."""
    if not isinstance(value, int):
        return value
    if key.endswith("price") or key.endswith("amount"):
        return format_money(value, currency)
    return format_count(value)


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
        currency = obj.invoice.currency
        return format_html_join(
            ", ",
            "{}: {}",
            (
                (key.replace("_", " ").capitalize(), _detail_value(key, value, currency))
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
                + date_format(timezone.localtime(obj.finalise_after), "DATETIME_FORMAT")
                + ": a change to its period before then re-prices it; then it becomes final."
            )
        return super().render_change_form(
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )
