"""The ledger, the requests behind it and the counters: read-only in the admin."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.db.models import Exists, OuterRef
from django.urls import reverse
from django.utils.html import format_html

from contacts.models import (
    Contact,
)
from contacts.status.models import (
    PeriodUsage,
    StatusChange,
    StatusChangeRequest,
)
from contacts.status.reasons import status_reason_text
from crm.admin import (
    BigTableAdmin,
    ReadOnlyAdminMixin,
)


@admin.register(StatusChange)
class StatusChangeAdmin(ReadOnlyAdminMixin, BigTableAdmin):
    list_display = [
        "id",
        "contact_display",
        "action",
        "from_status",
        "to_status",
        "requested_at",
        "effective_at",
        "delta",
        "reason_display",
    ]
    list_display_links = ["id"]
    list_select_related = ["actor"]
    list_filter = ["action", "source_type"]
    sortable_by = ["id", "effective_at"]
    search_fields = ["source_name"]
    search_help_text = "A contact id, or the start of a source name."

    def get_queryset(self, request):
        # No select_related("contact"): the row outlives its contact (no FK constraint), and
        # an inner join would hide it. Exists() is one primary-key probe per row shown.
        return (
            super()
            .get_queryset(request)
            .annotate(contact_exists=Exists(Contact.objects.filter(pk=OuterRef("contact_id"))))
        )

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.isdigit():
            return queryset.filter(contact_id=int(term)), False  # statuschange_contact_idx
        return queryset.filter(source_name__istartswith=term), False

    @admin.display(description="Why")
    def reason_display(self, obj: StatusChange) -> str:
        return obj.reason_text

    @admin.display(description="Contact", ordering="contact_id")
    def contact_display(self, obj: StatusChange):
        if getattr(obj, "contact_exists", False):
            url = reverse(
                f"{self.admin_site.name}:contacts_contact_change", args=[quote(obj.contact_id)]
            )
            return format_html('<a href="{}">{}</a>', url, obj.contact_id)
        return format_html("{} <span class='quiet'>(deleted)</span>", obj.contact_id)


@admin.register(StatusChangeRequest)
class StatusChangeRequestAdmin(ReadOnlyAdminMixin, BigTableAdmin):
    list_display = [
        "id",
        "operation",
        "idempotency_key",
        "reason_display",
        "requested_at",
        "result_summary",
    ]
    list_select_related = ["actor"]
    list_filter = ["operation", "source_type"]
    sortable_by = ["id"]
    search_fields = ["=idempotency_key"]
    fields = [
        "idempotency_key",
        "operation",
        "fingerprint",
        "reason_display",
        "actor",
        "requested_at",
        "result_summary",
    ]
    search_help_text = "An exact idempotency key."

    @admin.display(description="Why")
    def reason_display(self, obj: StatusChangeRequest) -> str:
        return status_reason_text(obj.source_type, obj.source_id, obj.source_name, obj.actor)

    @admin.display(description="Result")
    def result_summary(self, obj: StatusChangeRequest) -> str:
        result = obj.result or {}
        keys = ("matched", "changed", "scheduled", "cancelled", "already", "applied")
        return ", ".join(f"{key} {result[key]:,}" for key in keys if result.get(key)) or "nothing"


@admin.register(PeriodUsage)
class PeriodUsageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "period_start",
        "period_end",
        "opening_count",
        "live_count",
        "peak_count",
        "scheduled_downgrades",
        "updated_at",
    ]


# Bulk status changes run in the background have an admin of their own.
from contacts.status import bulk_admin  # noqa: E402, F401, I001
