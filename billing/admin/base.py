"""What the billing admins share: permissions, formats, the read-only base.

Every row of billing except the subscription is written by the system (the close, the
alert listener, the guardrails), so those admins are read-only for everyone, superusers
included. The only writes are the ones the services offer — acknowledging an alert,
approving or rejecting a held change, closing the periods — each behind its own permission.
"""

from __future__ import annotations

import datetime as dt

from django.contrib import admin
from django.utils import timezone
from django.utils.formats import date_format, number_format

from crm.admin import (
    ReadOnlyAdminMixin,
)

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
    return date_format(timezone.localtime(value))


def format_instant(value: dt.datetime | None) -> str:
    return "—" if value is None else date_format(timezone.localtime(value), "DATETIME_FORMAT")


class ReadOnlyBillingAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Users with the model's view permission see the list and a read-only detail page;
    a POST to the detail page is refused (403) by Django's change view."""
