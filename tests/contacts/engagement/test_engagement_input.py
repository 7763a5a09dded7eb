"""POST /api/engagement-events/ with input PostgreSQL cannot store as sent: a NUL character
in text (refused whole, 400, naming the place), an offset past ±15:59 (the same instant,
stored in UTC) and an instant out of range (an item error). On SQLite and PostgreSQL."""

import datetime as dt

import pytest
from rest_framework.test import APIClient

from contacts.engagement.models import EngagementEvent
from crm.inputs import JSON_MAX_DEPTH
from tests.factories import ContactFactory, UserFactory

URL = "/api/engagement-events/"


@pytest.fixture
def api(db):
    client = APIClient()
    client.force_authenticate(UserFactory(username="ops", groups=["Marketing ops"]))
    return client


@pytest.fixture
def contact(db):
    return ContactFactory()


def event(contact, external_id, **extra):
    return {
        "contact_id": contact.pk,
        "type": "email_click",
        "occurred_at": "2026-05-01T10:00:00Z",
        "external_id": external_id,
        **extra,
    }


@pytest.mark.parametrize(
    ("bad", "place"),
    [
        ({"external_id": "e\x00-2"}, "events[1].external_id"),
        (
            {"properties": {"campaign": {"name": "spring\x00"}}},
            "events[1].properties.campaign.name",
        ),
        ({"properties": {"k\x00": 1}}, "events[1].properties.'k\\x00'"),
    ],
)
def test_a_nul_anywhere_in_the_batch_is_a_400_naming_it_and_nothing_is_stored(
    api, contact, bad, place
):
    body = {"events": [event(contact, "e-1"), {**event(contact, "e-2"), **bad}]}

    response = api.post(URL, body, format="json")

    assert response.status_code == 400
    assert response.json() == {"detail": f"{place} must not contain the NUL character (\\u0000)."}
    assert not EngagementEvent.objects.exists()


def test_properties_nested_past_the_limit_are_a_400(api, contact):
    deep: dict = {}
    for _ in range(JSON_MAX_DEPTH):
        deep = {"k": deep}
    body = {"events": [event(contact, "e-1", properties=deep)]}

    response = api.post(URL, body, format="json")

    assert response.status_code == 400
    assert response.json() == {"detail": f"JSON nested deeper than {JSON_MAX_DEPTH} levels."}
    assert not EngagementEvent.objects.exists()


def test_an_offset_past_15_59_is_stored_as_the_same_instant_in_utc(api, contact):
    body = {"events": [event(contact, "e-1", occurred_at="2026-05-01T00:00:00-16:00")]}

    response = api.post(URL, body, format="json")

    assert response.status_code == 200, response.content
    assert response.data["created"] == 1
    stored = EngagementEvent.objects.get()
    assert stored.occurred_at == dt.datetime(2026, 5, 1, 16, 0, tzinfo=dt.UTC)
    contact.refresh_from_db()
    assert contact.last_engaged_at == stored.occurred_at


def test_an_instant_out_of_range_is_an_item_error_and_the_others_land(api, contact):
    body = {
        "events": [
            event(contact, "e-1"),
            event(contact, "e-2", occurred_at="0001-01-01T00:00:00+16:00"),
        ]
    }

    response = api.post(URL, body, format="json")

    assert response.status_code == 200, response.content
    assert (response.data["created"], response.data["errors"]) == (1, 1)
    assert response.data["items"][1]["messages"] == [
        "occurred_at: 0001-01-01T00:00:00+16:00 is out of range: in UTC it falls outside "
        "the years 1 to 9999."
    ]
    assert list(EngagementEvent.objects.values_list("external_id", flat=True)) == ["e-1"]
