"""The contacts REST API: create, read, update, delete, auth, and one contact's status."""

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from contacts.models import (
    LOCKED_KINDS,
    Contact,
    Source,
    SourceKind,
)
from contacts.status.models import (
    StatusChange,
    StatusChangeRequest,
)
from contacts.status.selectors import usage_current
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
    client_for,
    contact_snapshot,
    history_url,
    next_update,
    status_url,
)
from tests.factories import ContactFactory, SourceFactory, UserFactory

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
