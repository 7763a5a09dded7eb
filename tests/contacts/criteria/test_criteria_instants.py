"""Criteria and instants with any UTC offset: a tree's dates (workflows API) and the instant
the admin's criteria tester evaluates at. An offset past ±15:59 is the same instant in UTC;
an instant out of range is an error on the form, never a 500."""

import datetime as dt
import json
import re

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from contacts.engagement.models import EngagementEvent
from contacts.models import Contact
from tests.factories import ContactFactory, UserFactory

TESTER = reverse("workflows_criteria_tester")
FAR_WEST = "2026-01-01T00:00:00-16:00"  # 2026-01-01T16:00:00Z


def at(hour, minute=0):
    return dt.datetime(2026, 1, 1, hour, minute, tzinfo=dt.UTC)


def tree(name, operator, value):
    return {
        "filterGroups": [
            {"filters": [{"propertyName": name, "operator": operator, "value": value}]}
        ]
    }


@pytest.fixture
def clicks(db):
    """One contact clicked half an hour before 16:00 UTC, the other half an hour after
    (events, and the contacts' last_engaged_at)."""
    before, after = (
        ContactFactory(email="before@example.com"),
        ContactFactory(email="after@example.com"),
    )
    EngagementEvent.objects.bulk_create(
        [
            EngagementEvent(contact=before, type="email_click", occurred_at=at(15, 30)),
            EngagementEvent(contact=after, type="email_click", occurred_at=at(16, 30)),
        ]
    )
    Contact.objects.filter(pk=before.pk).update(last_engaged_at=at(15, 30))
    Contact.objects.filter(pk=after.pk).update(last_engaged_at=at(16, 30))
    return before, after


@pytest.fixture
def tester(db):
    user = UserFactory(username="root", is_superuser=True, is_staff=True)
    client = Client(raise_request_exception=False)
    client.force_login(user)
    return client


def count_on(response) -> int | None:
    found = re.search(r'id="criteria-count">(\d+) contact', response.content.decode())
    return int(found.group(1)) if found else None


def test_a_workflow_tree_with_an_offset_past_15_59_selects_by_the_same_instant(account, clicks):
    ops = APIClient()
    ops.force_authenticate(UserFactory(username="ops", groups=["Marketing ops"]))
    created = ops.post(
        "/api/workflows/",
        {"name": "Recent", "criteria": tree("last_engaged_at", "GT", FAR_WEST), "actions": []},
        format="json",
    )
    assert created.status_code == 201, created.content

    preview = ops.post(f"/api/workflows/{created.data['id']}/preview/", {}, format="json")

    assert preview.status_code == 200, preview.content
    assert preview.data["matched"] == 1
    assert [row["email"] for row in preview.data["sample"]] == ["after@example.com"]


def test_the_tester_evaluates_day_windows_at_an_instant_with_any_offset(tester, clicks):
    response = tester.post(
        TESTER,
        {"raw": json.dumps(tree("last_engaged", "WITHIN_LAST_DAYS", 1)), "now": FAR_WEST},
    )

    assert response.status_code == 200
    assert count_on(response) == 1  # the click at 15:30 UTC, not the one after 16:00


@pytest.mark.parametrize(
    ("now", "message"),
    [
        ("9999-12-31T23:00:00-16:00", "out of range"),  # the year 10000 in UTC
        ("0001-01-01T12:00:00Z", "years 1900 to 9998"),  # a day window would leave the calendar
    ],
)
def test_the_tester_refuses_an_instant_out_of_range_on_the_form(tester, clicks, now, message):
    response = tester.post(
        TESTER, {"raw": json.dumps(tree("last_engaged", "WITHIN_LAST_DAYS", 1)), "now": now}
    )

    assert response.status_code == 200
    assert count_on(response) is None
    assert message in response.context["form"].errors["now"][0]
