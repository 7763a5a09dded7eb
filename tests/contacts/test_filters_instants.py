"""Date-time filters of the contacts API and the bulk status change, with any UTC offset.

An offset past PostgreSQL's ±15:59 is the same instant in UTC: the filter answers it. An
instant with no UTC equivalent (beyond the year 9999 once converted) is a 400 naming the
parameter. Both on SQLite and PostgreSQL.
"""

import datetime as dt

import pytest
from rest_framework.test import APIClient

from contacts.models import Contact
from contacts.status.models import StatusChange
from tests.factories import ContactFactory

UTC = dt.UTC
CONTACTS = "/api/contacts/"
BULK = "/api/contacts/marketing-status/"
# 2026-01-01T00:00:00-16:00 is 2026-01-01T16:00:00Z.
FAR_WEST = "2026-01-01T00:00:00-16:00"
FAR_EAST = "2026-01-02T08:00:00+16:00"  # the same instant
OVERFLOW = "9999-12-31T23:00:00-16:00"  # the year 10000 in UTC
UNDERFLOW = "0001-01-01T00:00:00+16:00"  # the year 0 in UTC


@pytest.fixture
def ops(account, marketing_ops):
    client = APIClient()
    client.force_authenticate(marketing_ops)
    return client


@pytest.fixture
def around():
    """One contact engaged (and created) half an hour before 16:00 UTC, one half an hour after."""
    before = ContactFactory(email="before@example.com")
    after = ContactFactory(email="after@example.com")
    for contact, minute in ((before, 30), (after, 90)):
        instant = dt.datetime(2026, 1, 1, 15, 0, tzinfo=UTC) + dt.timedelta(minutes=minute)
        Contact.objects.filter(pk=contact.pk).update(created_at=instant, last_engaged_at=instant)
    return before, after


def emails(response) -> list[str]:
    return sorted(row["email"] for row in response.data["results"])


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("engaged_after", ["after@example.com"]),
        ("created_after", ["after@example.com"]),
        ("engaged_before", ["before@example.com"]),
        ("created_before", ["before@example.com"]),
    ],
)
@pytest.mark.parametrize("value", [FAR_WEST, FAR_EAST])
def test_a_datetime_filter_with_an_offset_past_15_59_compares_the_same_instant(
    ops, around, param, expected, value
):
    response = ops.get(CONTACTS, {param: value})

    assert response.status_code == 200, response.content
    assert emails(response) == expected


@pytest.mark.parametrize(
    "param", ["engaged_after", "created_after", "engaged_before", "created_before"]
)
@pytest.mark.parametrize("value", [OVERFLOW, UNDERFLOW])
def test_a_datetime_with_no_utc_equivalent_is_a_400_naming_the_parameter(ops, around, param, value):
    response = ops.get(CONTACTS, {param: value})

    assert response.status_code == 400
    assert list(response.data) == [param]
    assert "out of range" in response.data[param][0]


def test_the_bulk_change_by_filter_takes_the_same_datetimes(ops, around):
    before, after = around

    preview = ops.post(
        BULK,
        {"status": "marketing", "filter": {"engaged_after": FAR_WEST}, "preview": True},
        format="json",
    )
    change = ops.post(
        BULK, {"status": "marketing", "filter": {"engaged_after": FAR_WEST}}, format="json"
    )

    assert preview.status_code == 200, preview.content
    assert preview.data["matched"] == 1
    assert change.status_code == 200, change.content
    assert (change.data["matched"], change.data["changed"]) == (1, 1)
    assert list(StatusChange.objects.values_list("contact_id", flat=True)) == [after.pk]


@pytest.mark.parametrize("preview", [True, False])
def test_the_bulk_change_refuses_an_out_of_range_filter_and_changes_nothing(ops, around, preview):
    response = ops.post(
        BULK,
        {"status": "marketing", "filter": {"created_before": OVERFLOW}, "preview": preview},
        format="json",
    )

    assert response.status_code == 400
    assert list(response.data["filter"]) == ["created_before"]
    assert "out of range" in response.data["filter"]["created_before"][0]
    assert not StatusChange.objects.exists()
    assert not Contact.objects.filter(marketing_status="marketing").exists()
