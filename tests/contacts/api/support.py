"""What the contacts API tests share: the URLs and snapshots of what is stored."""

import datetime as dt

from rest_framework.test import APIClient

from contacts.models import (
    Contact,
    MarketingStatus,
)
from contacts.status.models import (
    StatusChange,
)
from contacts.status.selectors import usage_current

M = MarketingStatus.MARKETING.value
N = MarketingStatus.NON_MARKETING.value
CONTACTS = "/api/contacts/"
BULK = "/api/contacts/marketing-status/"
SOURCES = "/api/sources/"


def status_url(contact_id):
    return f"/api/contacts/{contact_id}/marketing-status/"


def history_url(contact_id):
    return f"/api/contacts/{contact_id}/status-history/"


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def api_time(value: dt.datetime) -> str:
    """A datetime as DRF renders it."""
    return value.isoformat().replace("+00:00", "Z")


def next_update() -> dt.datetime:
    return usage_current().period_end


def ledger_snapshot():
    return list(StatusChange.objects.order_by("id").values_list("contact_id", "action"))


def contact_snapshot():
    return list(
        Contact.objects.order_by("id").values_list(
            "id", "email", "marketing_status", "marketing_until", "updated_at"
        )
    )
