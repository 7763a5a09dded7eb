"""What the contacts admin tests share: URLs, status helpers and form posts."""

import re

from django.contrib.messages import get_messages
from django.urls import reverse
from django.utils import timezone

from contacts.models import (
    MarketingStatus,
)
from contacts.status.models import (
    PeriodUsage,
)
from contacts.status.results import StatusSource
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from crm.calendar import BillingCalendar

CHANGELIST = reverse("admin:contacts_contact_changelist")
ADD = reverse("admin:contacts_contact_add")
M = MarketingStatus.MARKETING
N = MarketingStatus.NON_MARKETING
TEST_SOURCE = StatusSource("manual", name="test")


def change_url(pk) -> str:
    return reverse("admin:contacts_contact_change", args=[pk])


def toggle_url(pk) -> str:
    return reverse("admin:contacts_contact_marketing_status", args=[pk])


def make_marketing(*contacts):
    contacts_set_marketing(contacts=[c.pk for c in contacts], source=TEST_SOURCE)


def make_pending(*contacts):
    make_marketing(*contacts)
    contacts_set_non_marketing(contacts=[c.pk for c in contacts], source=TEST_SOURCE)


def state(contact) -> tuple:
    contact.refresh_from_db()
    return contact.marketing_status, contact.marketing_until


def next_update():
    return BillingCalendar.for_account().next_update(timezone.now())


def day(value) -> str:
    return f"{value.day} {value:%b %Y}"


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def usage() -> tuple[int, int]:
    row = PeriodUsage.objects.get()
    return row.live_count, row.peak_count


def counting_contacts(queries) -> list[str]:
    return [
        q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and "contacts_contact" in q["sql"]
    ]


def results(response) -> set[str]:
    return {c.email for c in response.context["cl"].result_list}


def run_action(client, action, ids, *, query="", select_across=False):
    return client.post(
        CHANGELIST + query,
        {
            "action": action,
            "_selected_action": [str(pk) for pk in ids],
            "select_across": "1" if select_across else "0",
            "index": "0",
        },
    )


def confirm_action(client, action, ids, key, *, query="", select_across=False, count=None):
    data = {
        "action": action,
        "_selected_action": [str(pk) for pk in ids],
        "select_across": "1" if select_across else "0",
        "post": "yes",
        "idempotency_key": key,
    }
    if count is not None:
        data["confirm_count"] = str(count)
    return client.post(CHANGELIST + query, data)


def key_of(response) -> str:
    match = re.search(r'name="idempotency_key" value="([^"]+)"', response.content.decode())
    assert match, "the confirmation page carries an idempotency key"
    return match.group(1)
