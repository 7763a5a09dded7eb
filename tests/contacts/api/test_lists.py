"""The contacts REST API: list filters, pagination, sources, and generated input."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from contacts.models import (
    LOCKED_KINDS,
    Contact,
    Source,
    SourceKind,
)
from contacts.status.models import (
    PeriodUsage,
)
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from tests.contacts.api.support import (
    BULK,
    CONTACTS,
    SOURCES,
    M,
    N,
    api_time,
    contact_snapshot,
    history_url,
    ledger_snapshot,
    status_url,
)
from tests.factories import ContactFactory, SourceFactory

# --- filters ----------------------------------------------------------------------------


def listed(client, **params):
    response = client.get(CONTACTS, params)
    assert response.status_code == 200, response.data
    return [row["email"] for row in response.data["results"]]


@pytest.fixture
def population(account, manual):
    """Contacts covering every filter, created oldest first (the list is newest first)."""
    form = SourceFactory(name="Form", kind=SourceKind.FORM)
    chat = SourceFactory(name="Chat", kind=SourceKind.CHATFLOW)
    now = timezone.now()
    rows = {
        "ada@example.com": dict(
            first_name="Ada",
            last_name="Lovelace",
            source=form,
            lifecycle_stage="customer",
            lead_status="open",
            contact_type="customer",
            lead_score=90,
            last_engaged_at=now - dt.timedelta(days=1),
        ),
        "grace@example.com": dict(
            first_name="Grace",
            last_name="Hopper",
            source=chat,
            lifecycle_stage="lead",
            lead_status="new",
            contact_type="partner",
            lead_score=50,
            last_engaged_at=now - dt.timedelta(days=40),
        ),
        "alan@sample.org": dict(
            first_name="Alan",
            last_name="Turing",
            source=chat,
            lifecycle_stage="lead",
            lead_status="",
            contact_type="prospect",
            lead_score=10,
            last_engaged_at=None,
        ),
    }
    contacts = {email: ContactFactory(email=email, **fields) for email, fields in rows.items()}
    for days, email in zip((30, 20, 10), rows, strict=True):
        Contact.objects.filter(email=email).update(created_at=now - dt.timedelta(days=days))
    contacts_set_marketing(
        contacts=[contacts["ada@example.com"].pk, contacts["grace@example.com"].pk], source=manual
    )
    contacts_set_non_marketing(contacts=contacts["grace@example.com"], source=manual)
    return {"form": form, "chat": chat, "now": now, **contacts}


def test_list_is_newest_first(ops, population):
    assert listed(ops) == ["alan@sample.org", "grace@example.com", "ada@example.com"]


def test_filter_by_effective_marketing_status(ops, past_pending, population):
    # Grace's downgrade is pending: still marketing. The lapsed contact's date has passed.
    assert listed(ops, marketing_status=M) == ["grace@example.com", "ada@example.com"]
    assert listed(ops, marketing_status=N) == ["alan@sample.org", "lapsed@example.com"]


def test_filter_pending(ops, past_pending, population):
    assert listed(ops, pending="true") == ["grace@example.com"]
    assert listed(ops, pending="false") == [
        "alan@sample.org",
        "ada@example.com",
        "lapsed@example.com",
    ]


def test_filter_by_source_and_kind(ops, population):
    assert listed(ops, source=population["form"].pk) == ["ada@example.com"]
    assert listed(ops, source_kind="chatflow") == ["alan@sample.org", "grace@example.com"]


def test_filter_by_stage_status_and_type(ops, population):
    assert listed(ops, lifecycle_stage="lead") == ["alan@sample.org", "grace@example.com"]
    assert listed(ops, lead_status="new") == ["grace@example.com"]
    assert listed(ops, contact_type="customer") == ["ada@example.com"]


def test_filter_by_lead_score(ops, population):
    assert listed(ops, lead_score_min=50) == ["grace@example.com", "ada@example.com"]
    assert listed(ops, lead_score_max=50) == ["alan@sample.org", "grace@example.com"]
    assert listed(ops, lead_score_min=11, lead_score_max=89) == ["grace@example.com"]


def test_filter_by_created_and_engaged_dates(ops, population):
    now = population["now"]
    assert listed(ops, created_after=(now - dt.timedelta(days=25)).isoformat()) == [
        "alan@sample.org",
        "grace@example.com",
    ]
    assert listed(ops, created_before=(now - dt.timedelta(days=15)).isoformat()) == [
        "grace@example.com",
        "ada@example.com",
    ]
    assert listed(ops, engaged_after=(now - dt.timedelta(days=7)).isoformat()) == [
        "ada@example.com"
    ]
    assert listed(ops, engaged_before=(now - dt.timedelta(days=7)).isoformat()) == [
        "grace@example.com"
    ]


def test_filter_by_exact_email_ignores_case(ops, population):
    assert listed(ops, email="ADA@example.com") == ["ada@example.com"]
    assert listed(ops, email="ada@example") == []


def test_search_by_email_prefix_or_names(ops, population):
    assert listed(ops, search="GRA") == ["grace@example.com"]
    assert listed(ops, search="turing") == ["alan@sample.org"]
    assert listed(ops, search="ada love") == ["ada@example.com"]
    assert listed(ops, search="example.com") == []


def test_bulk_by_a_combined_filter(ops, population):
    body = {"status": M, "filter": {"source_kind": "chatflow", "marketing_status": N}}

    response = ops.post(BULK, body, format="json")

    assert (response.data["matched"], response.data["changed"]) == (1, 1)
    assert listed(ops, marketing_status=M) == [
        "alan@sample.org",
        "grace@example.com",
        "ada@example.com",
    ]


def test_filters_combine(ops, population):
    assert listed(ops, lifecycle_stage="lead", marketing_status=M) == ["grace@example.com"]


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("marketing_status", "foo"),
        ("pending", "maybe"),
        ("source", "999999"),
        ("source", "abc"),
        ("source_kind", "carrier_pigeon"),
        ("lifecycle_stage", "king"),
        ("lead_status", "busy"),
        ("contact_type", "alien"),
        ("lead_score_min", "ten"),
        ("lead_score_max", "1.5"),
        ("created_after", "yesterday"),
        ("created_before", "2026-13-01"),
        ("engaged_after", "soon"),
        ("engaged_before", "never"),
    ],
)
def test_a_bad_filter_value_is_400_naming_the_parameter(ops, param, value):
    ContactFactory()

    response = ops.get(CONTACTS, {param: value})

    assert response.status_code == 400
    assert list(response.data) == [param]


# --- pagination -------------------------------------------------------------------------


def test_cursor_pagination_follows_next_links_without_counting(ops):
    ContactFactory.create_batch(5)
    expected = list(Contact.objects.order_by("-id").values_list("email", flat=True))

    seen, url, pages = [], CONTACTS + "?page_size=2", 0
    with CaptureQueriesContext(connection) as queries:
        while url:
            response = ops.get(url)
            assert response.status_code == 200
            assert "count" not in response.data
            seen += [row["email"] for row in response.data["results"]]
            url, pages = response.data["next"], pages + 1

    assert seen == expected
    assert pages == 3
    assert not [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]


def test_list_is_one_query_whatever_the_rows(ops):
    ContactFactory.create_batch(2)
    ops.get(CONTACTS)  # the user's permissions are cached from here on
    with CaptureQueriesContext(connection) as small:
        ops.get(CONTACTS)
    ContactFactory.create_batch(20, source=SourceFactory(name="Other"))
    with CaptureQueriesContext(connection) as large:
        response = ops.get(CONTACTS)

    assert len(response.data["results"]) == 22
    assert len(small.captured_queries) == len(large.captured_queries) == 1


def test_page_size_is_capped(ops):
    ContactFactory.create_batch(3)

    response = ops.get(CONTACTS, {"page_size": 100_000})

    assert response.status_code == 200
    assert len(response.data["results"]) == 3


# --- sources ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "default"),
    [("form", True), ("ads", True), ("import", False), ("manual", False), ("mobile_app", False)],
)
def test_create_source_defaults_to_its_kind(ops, kind, default):
    response = ops.post(SOURCES, {"name": f"S {kind}", "kind": kind}, format="json")

    assert response.status_code == 201, response.data
    assert response.data["default_marketing"] is default
    assert response.data["locked"] is (kind in LOCKED_KINDS)
    assert Source.objects.get(pk=response.data["id"]).default_marketing is default


def test_source_representation(ops):
    source = SourceFactory(name="Meetings", kind=SourceKind.MEETINGS)

    response = ops.get(f"{SOURCES}{source.pk}/")

    assert response.data == {
        "id": source.pk,
        "name": "Meetings",
        "kind": "meetings",
        "kind_label": "Meetings link",
        "default_marketing": False,
        "locked": True,
        "created_at": api_time(source.created_at),
        "updated_at": api_time(source.updated_at),
    }


def test_a_locked_kind_cannot_default_to_marketing(ops):
    response = ops.post(
        SOURCES, {"name": "Inbox", "kind": "team_inbox", "default_marketing": True}, format="json"
    )

    assert response.status_code == 400
    assert list(response.data) == ["default_marketing"]
    assert Source.objects.count() == 0


def test_a_marketing_source_cannot_become_a_locked_kind(ops):
    source = SourceFactory(name="Form", kind=SourceKind.FORM)

    response = ops.patch(f"{SOURCES}{source.pk}/", {"kind": "document"}, format="json")

    assert response.status_code == 400
    assert list(response.data) == ["default_marketing"]
    source.refresh_from_db()
    assert (source.kind, source.default_marketing) == ("form", True)


def test_update_source_default_and_locked_is_read_only(ops):
    source = SourceFactory(name="Imports", kind=SourceKind.IMPORT)

    response = ops.patch(
        f"{SOURCES}{source.pk}/", {"default_marketing": True, "locked": True}, format="json"
    )

    assert response.status_code == 200
    assert (response.data["default_marketing"], response.data["locked"]) == (True, False)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "Taken", "kind": "form"}, "name"),
        ({"name": "X", "kind": "pigeon"}, "kind"),
        ({"kind": "form"}, "name"),
    ],
)
def test_create_source_bad_input(ops, payload, field):
    SourceFactory(name="Taken")

    response = ops.post(SOURCES, payload, format="json")

    assert response.status_code == 400
    assert list(response.data) == [field]
    assert Source.objects.count() == 1


def test_filter_sources_by_kind(ops):
    SourceFactory(name="A", kind=SourceKind.FORM)
    SourceFactory(name="B", kind=SourceKind.ADS)

    response = ops.get(SOURCES, {"kind": "ads"})

    assert [row["name"] for row in response.data["results"]] == ["B"]
    assert ops.get(SOURCES, {"kind": "pigeon"}).status_code == 400


def test_delete_a_source_with_contacts_is_refused(root):
    contact = ContactFactory()

    response = root.delete(f"{SOURCES}{contact.source_id}/")

    assert response.status_code == 409
    assert "still has contacts" in response.data["detail"]
    assert Source.objects.filter(pk=contact.source_id).exists()


def test_delete_an_unused_source(root):
    source = SourceFactory(name="Unused")

    assert root.delete(f"{SOURCES}{source.pk}/").status_code == 204
    assert not Source.objects.exists()


def test_deleting_a_source_needs_the_permission(sales_client):
    source = SourceFactory(name="Unused")

    assert sales_client.delete(f"{SOURCES}{source.pk}/").status_code == 403
    assert Source.objects.filter(pk=source.pk).exists()


def test_sales_cannot_create_sources(sales_client):
    response = sales_client.post(SOURCES, {"name": "Mine", "kind": "form"}, format="json")

    assert response.status_code == 403
    assert Source.objects.count() == 0


def test_usage_counters_follow_api_changes(ops):
    contacts = ContactFactory.create_batch(3)
    ops.post(BULK, {"status": M, "ids": [c.pk for c in contacts]}, format="json")
    ops.post(status_url(contacts[0].pk), {"status": N}, format="json")
    ops.delete(f"{CONTACTS}{contacts[1].pk}/")

    usage = PeriodUsage.objects.get()
    assert (usage.live_count, usage.peak_count, usage.scheduled_downgrades) == (2, 3, 1)


# --- generated input never gets a 5xx -------------------------------------------------

BIG = 10**20


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("get", f"{CONTACTS}{BIG}/", None),
        ("get", history_url(BIG), None),
        ("post", status_url(BIG), {"status": M}),
        ("get", f"{CONTACTS}?lead_score_min={BIG}", None),
        ("get", f"{CONTACTS}?source={BIG}", None),
        ("get", f"{CONTACTS}?email=a%00b", None),
        ("get", f"{CONTACTS}?search=a%00b", None),
        ("get", f"{CONTACTS}?cursor=garbage", None),
        ("get", f"{CONTACTS}?created_after=99999-01-01", None),
        ("post", BULK, {"status": M, "ids": [BIG]}),
        ("post", BULK, {"status": M, "filter": {"lead_score_min": BIG}}),
        ("post", BULK, {"status": M, "filter": {"email": "a\x00"}}),
        ("post", BULK, {"status": M, "filter": {"source": BIG}}),
        ("post", BULK, [1, 2]),
        ("post", BULK, {"status": M, "ids": [1], "idempotency_key": "a\x00"}),
        ("post", CONTACTS, {"email": "a@b.co", "lead_score": BIG}),
        ("post", CONTACTS, {"email": "a@b.co", "source": BIG}),
        ("post", CONTACTS, {"email": "a@b.co", "first_name": "x\x00"}),
        ("post", CONTACTS, {"email": "a@b.co", "last_engaged_at": "99999-01-01T00:00"}),
        ("post", CONTACTS, [1]),
        ("post", CONTACTS, {"email": "x" * 300 + "@b.co"}),
        ("post", SOURCES, {"name": "x\x00", "kind": "form"}),
        ("delete", f"{SOURCES}{BIG}/", None),
        ("patch", f"{CONTACTS}1/", {"email": None}),
        ("patch", f"{CONTACTS}1/", {"marketing_status": ["x"]}),
        ("patch", f"{CONTACTS}1/", {"source": {"a": 1}}),
    ],
)
def test_odd_input_never_gets_a_5xx_nor_changes_anything(root, method, url, body):
    ContactFactory(id=1)
    before = (contact_snapshot(), ledger_snapshot(), Source.objects.count())

    if body is None:
        response = getattr(root, method)(url)
    else:
        response = getattr(root, method)(url, body, format="json")

    # A 4xx, or a 200 that matches nothing (lead_score_min=10**20 is a valid, empty filter).
    assert response.status_code in {200, 400, 404}
    if response.status_code == 200:
        assert response.data.get("results", []) == [] and response.data.get("matched", 0) == 0
    assert (contact_snapshot(), ledger_snapshot(), Source.objects.count()) == before
