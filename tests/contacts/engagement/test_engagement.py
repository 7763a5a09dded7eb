"""Engagement ingestion (contacts.services.engagement_events_ingest): idempotent by external
id, per-item results, last_engaged_at only forward, the after-commit listener."""

import datetime as dt

import pytest

from contacts.engagement.models import EngagementEvent
from contacts.engagement.services import (
    ENGAGEMENT_BATCH_MAX,
    EngagementError,
    engagement_events_ingest,
    engagement_record,
)
from contacts.hooks import (
    NewEngagementEvent,
    register_engagement_listener,
    unregister_engagement_listener,
)
from contacts.models import Contact
from tests.conftest import at
from tests.factories import ContactFactory

NOW = at(2026, 6, 1, 12)


def event(
    contact=None, external_id="e-1", type="email_open", occurred_at="2026-05-01T10:00:00Z", **extra
):
    item = {"type": type, "occurred_at": occurred_at, "external_id": external_id, **extra}
    if contact is not None:
        item["contact_id"] = contact.pk
    return item


def stored():
    return sorted(
        EngagementEvent.objects.values_list("external_id", "contact_id", "type", "occurred_at")
    )


@pytest.fixture
def recorded():
    """What the engagement listeners receive, per call."""
    calls: list[list[NewEngagementEvent]] = []
    register_engagement_listener(calls.append)
    yield calls
    unregister_engagement_listener(calls.append)


def test_each_event_keeps_its_own_properties(db):
    # The batch's properties travel to the database apart from its other columns (one
    # JSON array), stored in an order of their own (by external id).
    ann = ContactFactory()
    properties = {
        "z-1": {"campaign": "été", "tags": ["a", "b"]},
        "a-2": {},
        "m-3": {"nested": {"depth": 2, "ok": True}, "n": 1.5},
    }
    items = [event(ann, key, properties=value) for key, value in properties.items()]
    items.insert(2, event(ann, "a-2", properties={"lost": "a repeat"}))

    batch = engagement_events_ingest(items=items, now=NOW)

    assert [item.status for item in batch.items] == ["created", "created", "duplicate", "created"]
    assert dict(EngagementEvent.objects.values_list("external_id", "properties")) == properties


def test_a_batch_is_stored_and_reported_item_by_item(db):
    # Given two contacts
    ann, bob = ContactFactory(email="ann@example.com"), ContactFactory(email="bob@example.com")
    # When a batch names one by id and one by email (any case)
    batch = engagement_events_ingest(
        items=[
            event(ann, "e-1", properties={"campaign": "spring"}),
            {**event(None, "e-2", type="page_view"), "email": " BOB@example.com "},
        ],
        now=NOW,
    )
    # Then both are stored and reported created, with their contact
    assert (batch.created, batch.duplicates, batch.errors) == (2, 0, 0)
    assert [(r.index, r.status, r.contact_id, r.external_id, r.messages) for r in batch.items] == [
        (0, "created", ann.pk, "e-1", []),
        (1, "created", bob.pk, "e-2", []),
    ]
    moment = at(2026, 5, 1, 10)
    assert stored() == [("e-1", ann.pk, "email_open", moment), ("e-2", bob.pk, "page_view", moment)]
    assert EngagementEvent.objects.get(external_id="e-1").properties == {"campaign": "spring"}
    assert batch.new_events == [
        NewEngagementEvent(ann.pk, "email_open", moment),
        NewEngagementEvent(bob.pk, "page_view", moment),
    ]
    assert batch.by_contact() == {
        ann.pk: [NewEngagementEvent(ann.pk, "email_open", moment)],
        bob.pk: [NewEngagementEvent(bob.pk, "page_view", moment)],
    }


def test_a_retried_batch_is_all_duplicates_and_stores_nothing_twice(db):
    # Given a batch ingested once
    ann = ContactFactory()
    items = [event(ann, "e-1"), event(ann, "e-2", type="email_click")]
    engagement_events_ingest(items=items, now=NOW)
    before = stored()
    # When the same batch comes again (a retry)
    batch = engagement_events_ingest(items=items, now=NOW)
    # Then every item is a duplicate, nothing new is stored, nothing is handed to scoring
    assert (batch.created, batch.duplicates, batch.errors) == (0, 2, 0)
    assert [r.status for r in batch.items] == ["duplicate", "duplicate"]
    assert batch.items[0].messages == ["Already recorded."]
    assert batch.new_events == []
    assert stored() == before


def test_a_duplicate_inside_the_batch_is_stored_once(db):
    # Given a batch where one external id appears twice (the second for another contact)
    ann, bob = ContactFactory(), ContactFactory()
    # When it is ingested
    batch = engagement_events_ingest(
        items=[event(ann, "same"), event(bob, "other"), event(bob, "same")], now=NOW
    )
    # Then the first occurrence is stored, the repeat reported as its duplicate
    assert [(r.status, r.messages) for r in batch.items] == [
        ("created", []),
        ("created", []),
        ("duplicate", ["The same external_id as item 0."]),
    ]
    assert [row[:2] for row in stored()] == [("other", bob.pk), ("same", ann.pk)]


def test_bad_items_are_reported_while_the_good_ones_land(db):
    # Given one good event among bad ones
    ann = ContactFactory(email="ann@example.com")
    bob = ContactFactory(email="bob@example.com")
    items = [
        event(ann, "good"),
        {**event(None, "x1"), "contact_id": 999_999},
        {**event(None, "x2"), "email": "nobody@example.com"},
        event(ann, "x3", type="tweet"),
        event(ann, "x4", occurred_at="last tuesday"),
        event(ann, "x5", occurred_at="2026-06-01T14:00:00Z"),  # 2 h ahead of now
        {"contact_id": ann.pk, "external_id": "x6"},
        event(ann, None),
        {**event(ann, "x8"), "email": "bob@example.com"},
        {**event(ann, "x9"), "colour": "red"},
        "not an object",
        event(ann, "x11", properties=[1, 2]),
        event(None, "x12"),
        event(bob, "x13", occurred_at="2026-02-30T00:00:00Z"),
    ]
    # When they are ingested
    batch = engagement_events_ingest(items=items, now=NOW)
    # Then only the good one is stored, and each bad one says why
    assert (batch.created, batch.duplicates, batch.errors) == (1, 0, 13)
    assert stored() == [("good", ann.pk, "email_open", at(2026, 5, 1, 10))]
    assert [(r.index, r.status, r.messages) for r in batch.items[1:]] == [
        (1, "error", ["Unknown contact id 999999."]),
        (2, "error", ["No contact with email nobody@example.com."]),
        (
            3,
            "error",
            [
                "type: 'tweet' is not one of email_open, email_click, form_submission, page_view, "
                "ad_click, chat, meeting_booked."
            ],
        ),
        (4, "error", ["occurred_at: 'last tuesday' is not an ISO 8601 date-time."]),
        (5, "error", ["occurred_at: 2026-06-01T14:00:00+00:00 is in the future."]),
        (6, "error", ["type: this field is required.", "occurred_at: this field is required."]),
        (7, "error", ["external_id: this field is required (it makes a retry safe)."]),
        (8, "error", [f"contact_id {ann.pk} and email bob@example.com are different contacts."]),
        (
            9,
            "error",
            [
                "Unknown fields: colour (allowed: contact_id, email, type, occurred_at, "
                "external_id, properties)."
            ],
        ),
        (10, "error", ["Each event must be an object."]),
        (11, "error", ["properties: must be an object."]),
        (12, "error", ["contact_id or email: one of them is required."]),
        (13, "error", ["occurred_at: '2026-02-30T00:00:00Z' is not an ISO 8601 date-time."]),
    ]
    assert [r.external_id for r in batch.items[:3]] == ["good", "x1", "x2"]


def test_dates_without_an_offset_are_utc_and_offsets_are_honoured(db):
    # Given events stamped without an offset, with one, and as a bare date
    ann = ContactFactory()
    engagement_events_ingest(
        items=[
            event(ann, "a", occurred_at="2026-05-01T10:00:00"),
            event(ann, "b", occurred_at="2026-05-01T12:00:00+02:00"),
            event(ann, "c", occurred_at="2026-05-02"),
        ],
        now=NOW,
    )
    # Then they are the instants they say, in UTC
    assert [row[3] for row in stored()] == [
        at(2026, 5, 1, 10),
        at(2026, 5, 1, 10),
        at(2026, 5, 2),
    ]


def test_last_engaged_at_only_moves_forward(db):
    # Given a contact engaged on 1 May, and one never engaged
    ann = ContactFactory(last_engaged_at=at(2026, 5, 1))
    bob = ContactFactory(last_engaged_at=None)
    # When older events arrive for her, and two for him
    engagement_events_ingest(
        items=[
            event(ann, "old", occurred_at="2026-04-01T00:00:00Z"),
            event(bob, "b1", occurred_at="2026-03-01T00:00:00Z"),
            event(bob, "b2", occurred_at="2026-03-05T00:00:00Z"),
        ],
        now=NOW,
    )
    # Then hers stays, his is the newest event
    ann.refresh_from_db()
    bob.refresh_from_db()
    assert (ann.last_engaged_at, bob.last_engaged_at) == (at(2026, 5, 1), at(2026, 3, 5))
    # When a newer event arrives for her
    engagement_events_ingest(items=[event(ann, "new", occurred_at="2026-05-20T08:00:00Z")], now=NOW)
    # Then hers moves forward
    ann.refresh_from_db()
    assert ann.last_engaged_at == at(2026, 5, 20, 8)


def test_a_duplicate_does_not_move_last_engaged_at(db):
    # Given an event stored, then the contact's last engagement set back by hand
    ann = ContactFactory()
    engagement_events_ingest(items=[event(ann, "e-1", occurred_at="2026-05-20T00:00:00Z")], now=NOW)
    Contact.objects.filter(pk=ann.pk).update(last_engaged_at=at(2026, 1, 1))
    # When the same event comes again
    engagement_events_ingest(items=[event(ann, "e-1", occurred_at="2026-05-20T00:00:00Z")], now=NOW)
    # Then the duplicate changed nothing
    ann.refresh_from_db()
    assert ann.last_engaged_at == at(2026, 1, 1)


def test_more_than_the_maximum_is_refused_as_a_whole(db):
    # Given one event more than a batch may hold
    ann = ContactFactory()
    items = [event(ann, f"e-{n}") for n in range(ENGAGEMENT_BATCH_MAX + 1)]
    # When it is ingested, then nothing is stored
    with pytest.raises(EngagementError, match="At most 10,000 events a request; got 10,001."):
        engagement_events_ingest(items=items, now=NOW)
    assert EngagementEvent.objects.count() == 0


def test_a_full_batch_of_10000_lands_in_a_fixed_number_of_queries(
    db, django_assert_max_num_queries
):
    # Given 10,000 events for 100 contacts
    contacts = ContactFactory.create_batch(100)
    items = [
        event(contacts[n % 100], f"e-{n}", occurred_at=f"2026-05-{n // 100 % 28 + 1:02d}T00:00:00Z")
        for n in range(ENGAGEMENT_BATCH_MAX)
    ]
    # When they are ingested. PostgreSQL: a lookup, the insert, the last-engaged update
    # (and savepoints). SQLite: Django's bulk_create sends 999 variables a statement (~166
    # events), the known-ids lookup is chunked, the update is one statement a 5,000 rows.
    from django.db import connection

    with django_assert_max_num_queries(8 if connection.vendor == "postgresql" else 80):
        batch = engagement_events_ingest(items=items, now=NOW)
    # Then all are stored
    assert (batch.created, EngagementEvent.objects.count()) == (10_000, 10_000)
    assert Contact.objects.filter(last_engaged_at=at(2026, 5, 28)).count() == 100


def test_listeners_get_the_new_events_after_commit_only(
    db, recorded, django_capture_on_commit_callbacks
):
    # Given a contact
    ann = ContactFactory()
    # When a batch is ingested with notify (the default), then again (a retry)
    with django_capture_on_commit_callbacks(execute=True):
        engagement_events_ingest(items=[event(ann, "e-1"), event(ann, "e-2")], now=NOW)
        assert recorded == []  # not before the commit
    with django_capture_on_commit_callbacks(execute=True):
        engagement_events_ingest(items=[event(ann, "e-1")], now=NOW)
    # Then the listener saw the two new events once, and nothing for the retry
    moment = at(2026, 5, 1, 10)
    assert recorded == [
        [NewEngagementEvent(ann.pk, "email_open", moment)] * 2,
    ]


def test_notify_false_leaves_the_listeners_alone(db, recorded, django_capture_on_commit_callbacks):
    ann = ContactFactory()
    with django_capture_on_commit_callbacks(execute=True):
        engagement_events_ingest(items=[event(ann, "e-1")], now=NOW, notify=False)
    assert recorded == []
    assert EngagementEvent.objects.count() == 1


def test_a_failing_listener_does_not_lose_the_events(db, django_capture_on_commit_callbacks):
    # Given a listener that fails
    def broken(events):
        raise RuntimeError("boom")

    register_engagement_listener(broken)
    ann = ContactFactory()
    try:
        # When events are ingested
        with django_capture_on_commit_callbacks(execute=True):
            batch = engagement_events_ingest(items=[event(ann, "e-1")], now=NOW)
    finally:
        unregister_engagement_listener(broken)
    # Then they are stored all the same
    assert batch.created == 1
    assert EngagementEvent.objects.count() == 1


def test_engagement_record_goes_through_the_ingestion_service(
    db, recorded, django_capture_on_commit_callbacks
):
    # Given a contact
    ann = ContactFactory()
    when = dt.datetime(2026, 5, 3, 9, tzinfo=dt.UTC)
    # When intake records an event, twice with the same id, and once without an id
    with django_capture_on_commit_callbacks(execute=True):
        first = engagement_record(
            contact=ann, type="chat", at=when, external_id="chat:1:c", properties={}
        )
        again = engagement_record(
            contact=ann, type="chat", at=when, external_id="chat:1:c", properties={}
        )
        anonymous = engagement_record(
            contact=ann, type="chat", at=when, external_id=None, properties={"x": 1}
        )
    # Then it is stored once per id, last_engaged_at moves, and the listeners hear of both
    assert (first, again, anonymous) == (True, False, True)
    assert EngagementEvent.objects.filter(contact=ann).count() == 2
    ann.refresh_from_db()
    assert ann.last_engaged_at == when
    assert recorded == [[NewEngagementEvent(ann.pk, "chat", when)]] * 2


def test_engagement_admin_is_read_only_and_filters_by_type(db, client):
    # Given an event and a superuser in the admin
    from tests.factories import UserFactory

    ann = ContactFactory(email="ann@example.com")
    engagement_events_ingest(items=[event(ann, "e-1"), event(ann, "e-2", type="chat")], now=NOW)
    client.force_login(UserFactory(username="root", is_superuser=True))
    url = "/admin/contacts/engagementevent/"
    # When the changelist is filtered by type, and an event is opened
    page = client.get(url, {"type__exact": "chat"})
    detail = client.get(f"{url}{EngagementEvent.objects.get(external_id='e-1').pk}/change/")
    # Then only that type is listed, and nothing can be added or changed
    assert page.status_code == 200
    assert [e.external_id for e in page.context["cl"].result_list] == ["e-2"]
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content
    assert client.get(f"{url}add/").status_code == 403


@pytest.mark.postgres
def test_postgres_fast_path_returns_only_what_it_stored(db):
    # Given an event stored before
    ann = ContactFactory()
    engagement_events_ingest(items=[event(ann, "old")], now=NOW)
    # When a batch mixes it with new ones and events without an external id
    batch = engagement_events_ingest(
        items=[event(ann, "old"), event(ann, "new"), event(ann, None), event(ann, None)],
        now=NOW,
        external_id_required=False,
    )
    # Then the known one is a duplicate and the three others are new
    assert [r.status for r in batch.items] == ["duplicate", "created", "created", "created"]
    assert len(batch.new_events) == 3
    assert EngagementEvent.objects.count() == 4
