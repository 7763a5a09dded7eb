"""Alerts (acknowledged by a person) and the daily usage, read-only."""

from __future__ import annotations

import datetime as dt

from django.contrib import admin, messages
from django.utils import timezone

from billing.admin.base import (
    ACKNOWLEDGE_PERMISSION,
    ReadOnlyBillingAdmin,
    format_day,
    format_instant,
)
from billing.alerts import billing_alert_acknowledge
from billing.models import (
    Alert,
    DailyUsage,
)
from crm.calendar import BillingCalendar


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
        # Counted before acknowledging: the list may be filtered to unacknowledged alerts,
        # and then the same queryset is empty afterwards.
        selected = queryset.count()
        done = 0
        for alert in queryset.filter(acknowledged_at__isnull=True):
            billing_alert_acknowledge(alert=alert, at=now)
            done += 1
        already = selected - done
        text = f"{done} alert{'s' if done != 1 else ''} acknowledged"
        text += f"; {already} already were." if already else "."
        self.message_user(request, text, messages.SUCCESS if done else messages.INFO)


@admin.register(DailyUsage)
class DailyUsageAdmin(ReadOnlyBillingAdmin):
    list_display = ["day", "max_count", "became_marketing"]
    fields = ["day", "max_count", "became_marketing"]
    readonly_fields = fields
    list_per_page = 100
