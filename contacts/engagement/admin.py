"""Engagement events in the admin (read-only)."""

from __future__ import annotations

from django.contrib import admin

from contacts.engagement.models import EngagementEvent
from crm.admin import (
    BigTableAdmin,
    ReadOnlyAdminMixin,
)


@admin.register(EngagementEvent)
class EngagementEventAdmin(ReadOnlyAdminMixin, BigTableAdmin):
    """Events are written by ingestion only (the API, intake): read-only here."""

    list_display = ["occurred_at", "type", "contact", "external_id", "created_at"]
    list_filter = ["type"]
    list_select_related = ["contact"]
    raw_id_fields = ["contact"]
    # Exact lookups only: the unique external_id index and the unique email index.
    search_fields = ["=external_id", "=contact__email"]
    search_help_text = "An exact external id, or a contact's exact email."
    # The primary key: newest first without sorting the table (occurred_at alone has no index).
    ordering = ["-id"]
    fields = ["contact", "type", "occurred_at", "external_id", "properties", "created_at"]
