"""The contacts REST API: contacts, marketing status (one, many, preview), history, sources."""

import datetime as dt

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from contacts.models import (
    LOCKED_KINDS,
    Contact,
    MarketingStatus,
    Source,
    SourceKind,
)
from contacts.status.models import (
    PendingApproval,
    PeriodUsage,
    StatusChange,
    StatusChangeRequest,
)
from contacts.status.selectors import usage_current
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from tests.factories import ContactFactory, SourceFactory, UserFactory, set_guardrails

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


@pytest.fixture
def ops(account, marketing_ops):
    return client_for(marketing_ops)


@pytest.fixture
def sales_client(account, sales):
    return client_for(sales)


@pytest.fixture
def root(account, superuser):
    return client_for(superuser)


@pytest.fixture
def past_pending(account, manual):
    """A contact made marketing and scheduled non-marketing two periods ago, never rolled
    over: its pending date has passed, so it is effectively non-marketing. List it before
    fixtures that change statuses now (the change clock never runs backwards)."""
    contact = ContactFactory(email="lapsed@example.com")
    long_ago = timezone.now() - dt.timedelta(days=70)
    contacts_set_marketing(contacts=contact, source=manual, at=long_ago)
    contacts_set_non_marketing(contacts=contact, source=manual, at=long_ago)
    contact.refresh_from_db()
    assert contact.marketing_status == M and contact.marketing_until < timezone.now()
    return contact


# --- create ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (SourceKind.FORM, M),
        (SourceKind.EXTERNAL_FORM, M),
        (SourceKind.ADS, M),
        (SourceKind.IMPORT, N),
        (SourceKind.CHATFLOW, N),
        (SourceKind.INTEGRATION, N),
        (SourceKind.MANUAL, N),
        *[(kind, N) for kind in sorted(LOCKED_KINDS)],
    ],
)
def test_create_takes_the_status_of_its_source_kind(ops, kind, expected):
    source = SourceFactory(name=f"src {kind}", kind=kind)

    response = ops.post(CONTACTS, {"email": "new@example.com", "source": source.pk}, format="json")

    assert response.status_code == 201, response.data
    assert response.data["marketing_status"] == expected
    assert response.data["source"] == source.pk
    assert response.data["source_kind"] == kind
    contact = Contact.objects.get()
    assert contact.marketing_status == expected
    rows = list(StatusChange.objects.values_list("action", "source_type", "source_id"))
    assert rows == ([("upgrade", "creation", str(source.pk))] if expected == M else [])


def test_create_without_source_records_the_manual_source(ops):
    response = ops.post(CONTACTS, {"email": "hand@example.com"}, format="json")

    assert response.status_code == 201
    source = Source.objects.get(pk=response.data["source"])
    assert (source.name, source.kind, source.default_marketing) == (
        "Created by hand",
        "manual",
        False,
    )
    assert response.data["source_name"] == "Created by hand"
    assert response.data["marketing_status"] == N
    assert StatusChange.objects.count() == 0


def test_create_representation(ops, marketing_ops):
    source = SourceFactory(name="Web form", kind=SourceKind.FORM)
    payload = {
        "email": "  Ada.Lovelace@Example.COM ",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "company": "Analytical Engines",
        "phone": "+44 20 7946 0000",
        "lifecycle_stage": "mql",
        "lead_status": "open",
        "contact_type": "customer",
        "lead_score": 42,
        "source": source.pk,
    }

    response = ops.post(CONTACTS, payload, format="json")

    assert response.status_code == 201, response.data
    contact = Contact.objects.get()
    assert response.data == {
        "id": contact.pk,
        "email": "ada.lovelace@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "company": "Analytical Engines",
        "phone": "+44 20 7946 0000",
        "lifecycle_stage": "mql",
        "lead_status": "open",
        "contact_type": "customer",
        "unsubscribed": False,
        "hard_bounced": False,
        "lead_score": 42,
        "last_engaged_at": None,
        "source": source.pk,
        "source_name": "Web form",
        "source_kind": "form",
        "marketing_status": M,
        "marketing_pending_from": None,
        "marketing_reason_type": "creation",
        "marketing_reason_id": str(source.pk),
        "marketing_reason_name": "Web form",
        "marketing_changed_at": api_time(contact.marketing_changed_at),
        "created_at": api_time(contact.created_at),
        "updated_at": api_time(contact.updated_at),
    }


def test_create_as_marketing_with_the_permission_is_recorded_as_the_api_user(ops, marketing_ops):
    response = ops.post(CONTACTS, {"email": "pick@example.com", "marketing": True}, format="json")

    assert response.status_code == 201, response.data
    assert response.data["marketing_status"] == M
    assert "marketing" not in response.data
    row = StatusChange.objects.get()
    assert (row.action, row.source_type, row.source_id, row.source_name, row.actor_id) == (
        "upgrade",
        "api",
        str(marketing_ops.pk),
        "ops",
        marketing_ops.pk,
    )
    assert usage_current().live_count == 1


def test_create_as_non_marketing_overrides_a_form_default(ops):
    source = SourceFactory(name="Web form", kind=SourceKind.FORM)

    response = ops.post(
        CONTACTS, {"email": "x@example.com", "source": source.pk, "marketing": False}, format="json"
    )

    assert response.status_code == 201
    assert response.data["marketing_status"] == N
    assert StatusChange.objects.count() == 0


def test_create_as_marketing_without_the_permission_is_refused(sales_client):
    response = sales_client.post(
        CONTACTS, {"email": "pick@example.com", "marketing": True}, format="json"
    )

    assert response.status_code == 403
    assert "contacts.change_marketing_status" in response.data["detail"]
    assert Contact.objects.count() == 0
    assert StatusChange.objects.count() == 0


def test_sales_may_create_with_the_source_default(sales_client):
    response = sales_client.post(CONTACTS, {"email": "lead@example.com"}, format="json")

    assert response.status_code == 201
    assert response.data["marketing_status"] == N


@pytest.mark.parametrize("kind", [SourceKind.MOBILE_APP, SourceKind.MEETINGS])
def test_create_as_marketing_from_a_locked_source_is_refused(ops, kind):
    source = SourceFactory(name="Locked", kind=kind)

    response = ops.post(
        CONTACTS, {"email": "m@example.com", "source": source.pk, "marketing": True}, format="json"
    )

    assert response.status_code == 400
    assert list(response.data) == ["marketing"]
    assert "locked" in response.data["marketing"][0]
    assert Contact.objects.count() == 0
    assert StatusChange.objects.count() == 0


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"email": ""}, "email"),
        ({}, "email"),
        ({"email": "a@example.com", "source": 999_999}, "source"),
        ({"email": "a@example.com", "source": "abc"}, "source"),
        ({"email": "a@example.com", "lifecycle_stage": "king"}, "lifecycle_stage"),
        ({"email": "a@example.com", "lead_score": "lots"}, "lead_score"),
        ({"email": "a@example.com", "marketing": "perhaps"}, "marketing"),
        ({"email": "a@example.com", "marketing_status": "marketing"}, "marketing_status"),
    ],
)
def test_create_bad_input_names_the_field_and_writes_nothing(ops, payload, field):
    response = ops.post(CONTACTS, payload, format="json")

    assert response.status_code == 400
    assert list(response.data) == [field]
    assert Contact.objects.count() == 0
    assert StatusChange.objects.count() == 0


def test_create_duplicate_email_is_refused_case_insensitively(ops):
    ContactFactory(email="taken@example.com")
    before = contact_snapshot()

    response = ops.post(CONTACTS, {"email": "TAKEN@Example.com "}, format="json")

    assert response.status_code == 400
    assert list(response.data) == ["email"]
    assert "already exists" in response.data["email"][0]
    assert contact_snapshot() == before


# --- read, update, delete -------------------------------------------------------------


def test_retrieve_shows_the_effective_status_and_pending_date(ops, manual):
    contact = ContactFactory()
    contacts_set_marketing(contacts=contact, source=manual)
    contacts_set_non_marketing(contacts=contact, source=manual)

    response = ops.get(f"{CONTACTS}{contact.pk}/")

    assert response.status_code == 200
    assert response.data["marketing_status"] == M
    assert response.data["marketing_pending_from"] == api_time(next_update())
    assert response.data["marketing_reason_type"] == "manual"
    assert response.data["marketing_reason_name"] == "test"


def test_retrieve_of_a_lapsed_pending_contact_is_non_marketing(ops, past_pending):
    response = ops.get(f"{CONTACTS}{past_pending.pk}/")

    assert response.data["marketing_status"] == N
    assert response.data["marketing_pending_from"] is None


def test_retrieve_unknown_contact_is_404(ops):
    assert ops.get(f"{CONTACTS}424242/").status_code == 404


def test_patch_changes_ordinary_fields(ops):
    contact = ContactFactory(email="p@example.com", lifecycle_stage="lead")

    response = ops.patch(
        f"{CONTACTS}{contact.pk}/",
        {"lifecycle_stage": "customer", "email": "P.New@Example.com", "lead_score": 7},
        format="json",
    )

    assert response.status_code == 200, response.data
    contact.refresh_from_db()
    assert (contact.lifecycle_stage, contact.email, contact.lead_score) == (
        "customer",
        "p.new@example.com",
        7,
    )
    assert response.data["email"] == "p.new@example.com"


def test_put_replaces_fields_and_accepts_a_round_tripped_representation(ops):
    contact = ContactFactory(email="r@example.com", company="Old")
    body = ops.get(f"{CONTACTS}{contact.pk}/").data
    body["company"] = "New"

    response = ops.put(f"{CONTACTS}{contact.pk}/", body, format="json")

    assert response.status_code == 200, response.data
    contact.refresh_from_db()
    assert contact.company == "New"
    assert contact.marketing_status == N


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"marketing_status": M}, "marketing_status"),
        ({"marketing": True}, "marketing"),
        ({"email": "bad"}, "email"),
        ({"lead_status": "maybe"}, "lead_status"),
        ({"source": 999_999}, "source"),
    ],
)
def test_patch_bad_input_names_the_field_and_changes_nothing(ops, payload, field):
    contact = ContactFactory()
    before = contact_snapshot()

    response = ops.patch(f"{CONTACTS}{contact.pk}/", payload, format="json")

    assert response.status_code == 400
    assert list(response.data) == [field]
    assert contact_snapshot() == before
    assert StatusChange.objects.count() == 0


def test_patch_marketing_status_points_to_the_status_endpoint(ops):
    contact = ContactFactory()

    response = ops.patch(f"{CONTACTS}{contact.pk}/", {"marketing_status": M}, format="json")

    assert "marketing-status" in response.data["marketing_status"][0]


def test_patch_to_a_taken_email_is_refused(ops):
    ContactFactory(email="taken@example.com")
    contact = ContactFactory(email="mine@example.com")
    before = contact_snapshot()

    response = ops.patch(f"{CONTACTS}{contact.pk}/", {"email": "Taken@example.com"}, format="json")

    assert response.status_code == 400
    assert list(response.data) == ["email"]
    assert contact_snapshot() == before


def test_sales_cannot_delete(sales_client):
    contact = ContactFactory()

    assert sales_client.delete(f"{CONTACTS}{contact.pk}/").status_code == 403
    assert Contact.objects.filter(pk=contact.pk).exists()


def test_delete_lowers_the_live_count_but_not_the_peak(ops, marketing_ops, manual):
    contact = ContactFactory()
    contacts_set_marketing(contacts=contact, source=manual)

    response = ops.delete(f"{CONTACTS}{contact.pk}/")

    assert response.status_code == 204
    assert not Contact.objects.filter(pk=contact.pk).exists()
    usage = usage_current()
    assert (usage.live_count, usage.peak_count) == (0, 1)
    row = StatusChange.objects.order_by("id").last()
    assert (row.action, row.source_type, row.actor_id) == ("deleted", "api", marketing_ops.pk)
    assert ops.get(f"{CONTACTS}{contact.pk}/").status_code == 404


# --- auth and permissions -------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("get", CONTACTS),
        ("post", CONTACTS),
        ("get", f"{CONTACTS}1/"),
        ("patch", f"{CONTACTS}1/"),
        ("delete", f"{CONTACTS}1/"),
        ("post", status_url(1)),
        ("post", BULK),
        ("get", history_url(1)),
        ("get", SOURCES),
        ("post", SOURCES),
    ],
)
def test_anonymous_requests_are_refused(account, method, url):
    contact = ContactFactory(id=1)
    before = contact_snapshot()

    response = getattr(APIClient(), method)(url, {"status": M, "ids": [1]}, format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert contact_snapshot() == before
    assert Contact.objects.filter(pk=contact.pk).exists()
    assert StatusChange.objects.count() == 0


def test_token_authentication(account, marketing_ops):
    token = Token.objects.create(user=marketing_ops)
    ContactFactory(email="t@example.com")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    response = client.get(CONTACTS)

    assert response.status_code == 200
    assert [row["email"] for row in response.data["results"]] == ["t@example.com"]


def test_session_authentication(account, marketing_ops):
    client = APIClient()
    assert client.login(username="ops", password="pw")

    assert client.get(CONTACTS).status_code == 200


def test_reading_needs_the_view_permission(account):
    user = UserFactory(username="nobody")
    ContactFactory()

    assert client_for(user).get(CONTACTS).status_code == 403
    assert client_for(user).get(SOURCES).status_code == 403


def test_sales_cannot_change_a_status(sales_client, manual):
    contact = ContactFactory()
    before = contact_snapshot()

    response = sales_client.post(status_url(contact.pk), {"status": M}, format="json")

    assert response.status_code == 403
    assert "contacts.change_marketing_status" in response.data["detail"]
    assert contact_snapshot() == before
    assert StatusChange.objects.count() == 0
    assert StatusChangeRequest.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        {"status": M, "ids": [1]},
        {"status": M, "filter": {"lifecycle_stage": "lead"}},
        {"status": M, "ids": [1], "preview": True},
    ],
)
def test_sales_cannot_change_many_statuses_or_preview(sales_client, body):
    ContactFactory(id=1)
    before = contact_snapshot()

    response = sales_client.post(BULK, body, format="json")

    assert response.status_code == 403
    assert contact_snapshot() == before
    assert StatusChange.objects.count() == 0
    assert StatusChangeRequest.objects.count() == 0


# --- one contact's status -------------------------------------------------------------


def test_set_marketing_then_non_marketing_then_marketing_again(ops, marketing_ops):
    contact = ContactFactory()
    url = status_url(contact.pk)

    up = ops.post(url, {"status": M}, format="json")

    assert up.status_code == 200, up.data
    assert {k: up.data[k] for k in ("operation", "matched", "changed", "already")} == {
        "operation": "set_marketing",
        "matched": 1,
        "changed": 1,
        "already": 0,
    }
    assert (up.data["live_count"], up.data["peak_count"]) == (1, 1)
    assert up.data["idempotency_key"] is None
    assert up.data["contact"]["marketing_status"] == M
    assert up.data["contact"]["marketing_reason_type"] == "api"
    assert up.data["contact"]["marketing_reason_id"] == str(marketing_ops.pk)
    assert up.data["contact"]["marketing_reason_name"] == "ops"
    assert "replayed" not in up.data
    assert "Idempotent-Replayed" not in up

    down = ops.post(url, {"status": N}, format="json")

    assert (down.data["scheduled"], down.data["already"]) == (1, 0)
    assert down.data["effective_from"] == api_time(next_update())
    # Deferred: still marketing (and billable) until the next update date.
    assert down.data["contact"]["marketing_status"] == M
    assert down.data["contact"]["marketing_pending_from"] == api_time(next_update())
    assert (down.data["live_count"], down.data["peak_count"]) == (1, 1)

    again = ops.post(url, {"status": M}, format="json")

    assert (again.data["changed"], again.data["cancelled"]) == (0, 1)
    assert again.data["contact"]["marketing_pending_from"] is None
    assert (again.data["live_count"], again.data["peak_count"]) == (1, 1)
    assert list(StatusChange.objects.order_by("id").values_list("action", flat=True)) == [
        "upgrade",
        "downgrade_scheduled",
        "downgrade_cancelled",
    ]
    assert set(StatusChange.objects.values_list("source_type", "actor_id")) == {
        ("api", marketing_ops.pk)
    }


def test_set_the_status_already_held_changes_nothing(ops):
    contact = ContactFactory()

    response = ops.post(status_url(contact.pk), {"status": N}, format="json")

    assert (response.data["matched"], response.data["already"], response.data["scheduled"]) == (
        1,
        1,
        0,
    )
    assert StatusChange.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"status": "billable"}, "status"),
        ({}, "status"),
        ({"status": M, "idempotency_key": "k" * 151}, "idempotency_key"),
    ],
)
def test_bad_status_request_names_the_field_and_changes_nothing(ops, body, field):
    contact = ContactFactory()
    before = contact_snapshot()

    response = ops.post(status_url(contact.pk), body, format="json")

    assert response.status_code == 400
    assert list(response.data) == [field]
    assert contact_snapshot() == before
    assert StatusChangeRequest.objects.count() == 0


def test_status_of_an_unknown_contact_is_404(ops):
    response = ops.post(status_url(424242), {"status": M}, format="json")

    assert response.status_code == 404
    assert StatusChangeRequest.objects.count() == 0


def test_a_retry_with_the_same_key_returns_the_same_answer_and_changes_nothing(ops):
    contact = ContactFactory()
    body = {"status": M, "idempotency_key": "retry-1"}

    first = ops.post(status_url(contact.pk), body, format="json")
    second = ops.post(status_url(contact.pk), body, format="json")

    assert first.status_code == second.status_code == 200
    assert second.data == first.data
    assert first.data["idempotency_key"] == "retry-1"
    assert second["Idempotent-Replayed"] == "true"
    assert StatusChange.objects.count() == 1
    assert StatusChangeRequest.objects.get().idempotency_key.endswith(":retry-1")
    assert usage_current().live_count == 1


def test_the_idempotency_key_header_is_accepted(ops):
    contact = ContactFactory()

    first = ops.post(
        status_url(contact.pk), {"status": M}, format="json", HTTP_IDEMPOTENCY_KEY="h1"
    )
    second = ops.post(status_url(contact.pk), {"status": M, "idempotency_key": "h1"}, format="json")

    assert second.data == first.data
    assert first.data["idempotency_key"] == "h1"
    assert StatusChange.objects.count() == 1


def test_header_and_body_keys_must_agree(ops):
    contact = ContactFactory()

    response = ops.post(
        status_url(contact.pk),
        {"status": M, "idempotency_key": "a"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="b",
    )

    assert response.status_code == 400
    assert list(response.data) == ["idempotency_key"]
    assert StatusChangeRequest.objects.count() == 0


@pytest.mark.parametrize("header", ["k" * 151, "a\x00b"])
def test_a_bad_idempotency_key_header_is_refused(ops, header):
    contact = ContactFactory()

    response = ops.post(
        status_url(contact.pk), {"status": M}, format="json", HTTP_IDEMPOTENCY_KEY=header
    )

    assert response.status_code == 400
    assert list(response.data) == ["idempotency_key"]
    assert StatusChangeRequest.objects.count() == 0


def test_a_reused_key_for_a_different_request_is_a_conflict(ops):
    first_contact, other = ContactFactory(), ContactFactory()
    ops.post(status_url(first_contact.pk), {"status": M, "idempotency_key": "k"}, format="json")
    before = contact_snapshot()

    other_contact = ops.post(
        status_url(other.pk), {"status": M, "idempotency_key": "k"}, format="json"
    )
    other_status = ops.post(
        status_url(first_contact.pk), {"status": N, "idempotency_key": "k"}, format="json"
    )

    assert other_contact.status_code == other_status.status_code == 409
    assert other_contact.data == {
        "idempotency_key": ["The idempotency key 'k' was already used for a different request."]
    }
    assert contact_snapshot() == before
    assert StatusChange.objects.count() == 1


def test_keys_are_per_user(ops, account):
    contact = ContactFactory()
    other_ops = client_for(UserFactory(username="ops2", groups=["Marketing ops"]))

    first = ops.post(
        status_url(contact.pk), {"status": M, "idempotency_key": "same"}, format="json"
    )
    second = other_ops.post(
        status_url(contact.pk), {"status": N, "idempotency_key": "same"}, format="json"
    )

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.data["scheduled"] == 1


# --- many contacts' status ------------------------------------------------------------


def test_bulk_by_ids(ops):
    contacts = ContactFactory.create_batch(3)
    ids = [contacts[0].pk, contacts[1].pk, 999_999]

    response = ops.post(BULK, {"status": M, "ids": ids}, format="json")

    assert response.status_code == 200, response.data
    assert {k: response.data[k] for k in ("matched", "changed", "already", "live_count")} == {
        "matched": 2,
        "changed": 2,
        "already": 0,
        "live_count": 2,
    }
    assert "contact" not in response.data
    assert set(Contact.objects.filter(marketing_status=M).values_list("pk", flat=True)) == set(
        ids[:2]
    )


def test_bulk_non_marketing_by_ids_is_deferred(ops, manual):
    contacts = ContactFactory.create_batch(2)
    contacts_set_marketing(contacts=[c.pk for c in contacts], source=manual)

    response = ops.post(BULK, {"status": N, "ids": [c.pk for c in contacts]}, format="json")

    assert (response.data["scheduled"], response.data["live_count"]) == (2, 2)
    assert response.data["effective_from"] == api_time(next_update())
    assert usage_current().pending_downgrades == 2
    assert Contact.objects.billable(timezone.now()).count() == 2


def test_bulk_by_filter(ops):
    customers = ContactFactory.create_batch(2, lifecycle_stage="customer")
    ContactFactory(lifecycle_stage="lead")

    response = ops.post(
        BULK, {"status": M, "filter": {"lifecycle_stage": "customer"}}, format="json"
    )

    assert response.status_code == 200, response.data
    assert (response.data["matched"], response.data["changed"]) == (2, 2)
    assert set(Contact.objects.filter(marketing_status=M).values_list("pk", flat=True)) == {
        c.pk for c in customers
    }


def test_bulk_by_effective_status_filter_is_idempotent(ops, manual, past_pending):
    marketing = ContactFactory.create_batch(2)
    contacts_set_marketing(contacts=[c.pk for c in marketing], source=manual)
    body = {"status": N, "filter": {"marketing_status": M}, "idempotency_key": "sweep"}

    first = ops.post(BULK, body, format="json")
    ledger = ledger_snapshot()
    second = ops.post(BULK, body, format="json")

    assert first.status_code == second.status_code == 200
    # The lapsed contact is effectively non-marketing: it is not matched.
    assert (first.data["matched"], first.data["scheduled"]) == (2, 2)
    assert second.data == first.data
    assert second["Idempotent-Replayed"] == "true"
    assert ledger_snapshot() == ledger


def test_bulk_retry_with_the_same_key_writes_one_set_of_rows(ops):
    contacts = ContactFactory.create_batch(3)
    body = {"status": M, "ids": [c.pk for c in contacts], "idempotency_key": "b1"}

    first = ops.post(BULK, body, format="json")
    # Same ids in another order, key in the header: the same request.
    second = ops.post(
        BULK,
        {"status": M, "ids": [c.pk for c in reversed(contacts)]},
        format="json",
        HTTP_IDEMPOTENCY_KEY="b1",
    )

    assert second.data == first.data
    assert StatusChange.objects.count() == 3
    assert StatusChangeRequest.objects.count() == 1


def test_bulk_reused_key_with_another_filter_is_a_conflict(ops):
    ContactFactory(lifecycle_stage="customer")
    ContactFactory(lifecycle_stage="lead")
    ops.post(
        BULK,
        {"status": M, "filter": {"lifecycle_stage": "customer"}, "idempotency_key": "f"},
        format="json",
    )
    before = contact_snapshot()

    response = ops.post(
        BULK,
        {"status": M, "filter": {"lifecycle_stage": "lead"}, "idempotency_key": "f"},
        format="json",
    )

    assert response.status_code == 409
    assert contact_snapshot() == before


def test_preview_counts_and_writes_nothing(ops, manual):
    settled = ContactFactory()
    pending = ContactFactory()
    new = ContactFactory.create_batch(2)
    contacts_set_marketing(contacts=[settled.pk, pending.pk], source=manual)
    contacts_set_non_marketing(contacts=pending, source=manual)
    before = (contact_snapshot(), ledger_snapshot(), StatusChangeRequest.objects.count())
    ids = [settled.pk, pending.pk, *[c.pk for c in new]]

    up = ops.post(BULK, {"status": M, "ids": ids, "preview": True}, format="json")
    down = ops.post(
        BULK, {"status": N, "filter": {"marketing_status": M}, "preview": True}, format="json"
    )

    assert up.status_code == down.status_code == 200
    period = usage_current()
    cost = up.data.pop("extra")["cost"]
    assert {k: cost[k] for k in ("would_add", "peak_before", "peak_after", "invoice_delta")} == {
        "would_add": 2,
        "peak_before": 2,
        "peak_after": 4,
        "invoice_delta": 0,
    }
    assert {k: v for k, v in up.data.items() if k != "at"} == {
        "operation": "set_marketing",
        "matched": 4,
        "would_change": 2,
        "would_schedule": 0,
        "would_cancel": 1,
        "already": 1,
        "effective_from": None,
        "live_count": 2,
        "live_after": 4,
        "peak_count": 2,
        "peak_after": 4,
        "period_start": api_time(period.period_start),
        "period_end": api_time(period.period_end),
    }
    assert (down.data["matched"], down.data["would_schedule"], down.data["already"]) == (2, 1, 1)
    assert down.data["effective_from"] == api_time(period.period_end)
    assert (contact_snapshot(), ledger_snapshot(), StatusChangeRequest.objects.count()) == before


@pytest.fixture
def hard_cap_one(account):
    return set_guardrails(hard_cap=1)


def test_bulk_past_the_hard_cap_is_held_for_approval(ops, hard_cap_one):
    contacts = ContactFactory.create_batch(2)
    body = {"status": M, "ids": [c.pk for c in contacts], "idempotency_key": "big"}
    before = contact_snapshot()

    first = ops.post(BULK, body, format="json")
    retry = ops.post(BULK, body, format="json")

    assert first.status_code == retry.status_code == 202
    assert first.data["held"] is True
    assert first.data["idempotency_key"] == "big"
    assert first.data["detail"].startswith("Waiting for approval #")
    assert "hard cap of 1" in first.data["detail"]
    assert retry.data == first.data
    approval = PendingApproval.objects.get()
    assert (approval.new_marketing, approval.contact_ids) == (2, [c.pk for c in contacts])
    assert contact_snapshot() == before
    assert StatusChange.objects.count() == 0


def test_a_held_bulk_by_filter_runs_on_approval_and_a_retry_then_replays(
    ops, hard_cap_one, superuser
):
    from billing.guardrails import billing_approval_approve

    ContactFactory.create_batch(2, lifecycle_stage="customer")
    body = {"status": M, "filter": {"lifecycle_stage": "customer", "marketing_status": N}}
    body["idempotency_key"] = "approve-me"

    held = ops.post(BULK, body, format="json")
    approval = billing_approval_approve(approval=PendingApproval.objects.get(), user=superuser)
    retry = ops.post(BULK, body, format="json")

    assert held.status_code == 202
    assert approval.status == "approved"
    assert Contact.objects.filter(marketing_status=M).count() == 2
    assert retry.status_code == 200
    assert retry["Idempotent-Replayed"] == "true"
    assert (retry.data["matched"], retry.data["changed"]) == (2, 2)
    assert StatusChange.objects.count() == 2


def test_one_contact_past_the_hard_cap_is_held(ops, hard_cap_one, manual):
    first, second = ContactFactory.create_batch(2)
    contacts_set_marketing(contacts=first, source=manual)

    response = ops.post(status_url(second.pk), {"status": M}, format="json")

    assert response.status_code == 202
    assert response.data["held"] is True
    second.refresh_from_db()
    assert second.marketing_status == N


def test_downgrades_are_never_held(ops, hard_cap_one, manual):
    contacts = ContactFactory.create_batch(2)
    contacts_set_marketing(contacts=[c.pk for c in contacts], source=manual)

    response = ops.post(BULK, {"status": N, "ids": [c.pk for c in contacts]}, format="json")

    assert response.status_code == 200
    assert response.data["scheduled"] == 2


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"status": "later", "ids": [1]}, ["status"]),
        ({"status": M}, ["non_field_errors"]),
        ({"status": M, "ids": [1], "filter": {"lifecycle_stage": "lead"}}, ["non_field_errors"]),
        ({"status": M, "ids": []}, ["ids"]),
        ({"status": M, "ids": ["x"]}, ["ids"]),
        ({"status": M, "ids": list(range(1, 10_002))}, ["ids"]),
        ({"status": M, "filter": "lifecycle_stage=lead"}, ["filter"]),
        ({"status": M, "filter": {}}, ["filter"]),
        ({"status": M, "filter": {"search": "  "}}, ["filter"]),
        ({"status": M, "preview": "sure", "ids": [1]}, ["preview"]),
    ],
)
def test_bulk_bad_input_is_400_and_writes_nothing(ops, body, errors):
    ContactFactory(id=1, lifecycle_stage="lead")
    before = contact_snapshot()

    response = ops.post(BULK, body, format="json")

    assert response.status_code == 400
    assert list(response.data) == errors
    assert contact_snapshot() == before
    assert StatusChangeRequest.objects.count() == 0


@pytest.mark.parametrize(
    ("filter_", "bad_key"),
    [
        ({"lifecycle": "lead"}, "lifecycle"),
        ({"lifecycle_stage": "king"}, "lifecycle_stage"),
        ({"marketing_status": "foo"}, "marketing_status"),
        ({"pending": "maybe"}, "pending"),
        ({"lead_score_min": "ten"}, "lead_score_min"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"source": 999_999}, "source"),
        ({"lifecycle_stage": ["lead", "mql"]}, "lifecycle_stage"),
    ],
)
def test_bulk_malformed_filter_names_the_bad_key(ops, filter_, bad_key):
    ContactFactory(lifecycle_stage="lead")
    before = contact_snapshot()

    response = ops.post(BULK, {"status": M, "filter": filter_}, format="json")

    assert response.status_code == 400
    assert list(response.data) == ["filter"]
    assert list(response.data["filter"]) == [bad_key]
    assert contact_snapshot() == before
    assert StatusChangeRequest.objects.count() == 0


# --- status history ---------------------------------------------------------------------


def test_status_history(ops, marketing_ops, manual):
    contact = ContactFactory()
    ContactFactory()  # another contact's rows are not shown
    ops.post(status_url(contact.pk), {"status": M}, format="json")
    ops.post(status_url(contact.pk), {"status": N}, format="json")

    response = ops.get(history_url(contact.pk))

    assert response.status_code == 200
    rows = response.data["results"]
    assert [(r["action"], r["from_status"], r["to_status"], r["delta"]) for r in rows] == [
        ("downgrade_scheduled", M, N, -1),
        ("upgrade", N, M, 1),
    ]
    assert rows[0]["effective_at"] == api_time(next_update())
    assert rows[1]["effective_at"] == rows[1]["requested_at"]
    assert {
        (r["contact_id"], r["source_type"], r["source_id"], r["source_name"]) for r in rows
    } == {(contact.pk, "api", str(marketing_ops.pk), "ops")}
    assert {(r["actor"], r["actor_username"]) for r in rows} == {(marketing_ops.pk, "ops")}
    assert response.data["next"] is None


def test_status_history_outlives_the_contact(ops, manual):
    contact = ContactFactory()
    contacts_set_marketing(contacts=contact, source=manual)
    ops.delete(f"{CONTACTS}{contact.pk}/")

    response = ops.get(history_url(contact.pk))

    assert response.status_code == 200
    assert [r["action"] for r in response.data["results"]] == ["deleted", "upgrade"]
    assert [r["to_status"] for r in response.data["results"]] == ["none", M]


def test_status_history_of_a_contact_without_changes_is_empty(ops):
    contact = ContactFactory()

    response = ops.get(history_url(contact.pk))

    assert response.status_code == 200
    assert response.data["results"] == []


def test_status_history_of_nothing_is_404(ops):
    assert ops.get(history_url(424242)).status_code == 404


def test_status_history_is_paginated(ops, manual):
    contact = ContactFactory()
    for _ in range(3):
        contacts_set_marketing(contacts=contact, source=manual)
        contacts_set_non_marketing(contacts=contact, source=manual)

    page1 = ops.get(history_url(contact.pk), {"page_size": 4})
    page2 = ops.get(page1.data["next"])

    assert len(page1.data["results"]) == 4
    assert len(page2.data["results"]) == 2
    assert page2.data["next"] is None
    ids = [r["id"] for r in page1.data["results"] + page2.data["results"]]
    assert ids == list(
        StatusChange.objects.filter(contact_id=contact.pk)
        .order_by("-id")
        .values_list("id", flat=True)
    )


def test_status_history_needs_its_view_permission(account):
    user = UserFactory(username="viewer")
    user.user_permissions.add(Permission.objects.get(codename="view_contact"))
    contact = ContactFactory()

    assert client_for(user).get(history_url(contact.pk)).status_code == 403


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
