"""The contacts REST API: many contacts' status (by ids, by filter, preview, held) and history."""

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from contacts.models import (
    Contact,
)
from contacts.status.models import (
    PendingApproval,
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
    M,
    N,
    api_time,
    client_for,
    contact_snapshot,
    history_url,
    ledger_snapshot,
    next_update,
    status_url,
)
from tests.factories import ContactFactory, UserFactory, set_guardrails

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
    assert up.data["preview"] is down.data["preview"] is True
    period = usage_current()
    cost = up.data.pop("extra")["cost"]
    assert {k: cost[k] for k in ("would_add", "peak_before", "peak_after", "invoice_delta")} == {
        "would_add": 2,
        "peak_before": 2,
        "peak_after": 4,
        "invoice_delta": 0,
    }
    assert {k: v for k, v in up.data.items() if k != "requested_at"} == {
        "preview": True,
        "operation": "set_marketing",
        "idempotency_key": None,
        "matched": 4,
        "changed": 2,
        "scheduled": 0,
        "cancelled": 1,
        "already": 1,
        "effective_from": None,
        "live_count": 4,
        "peak_count": 4,
    }
    assert (down.data["matched"], down.data["scheduled"], down.data["already"]) == (2, 1, 1)
    assert down.data["effective_from"] == api_time(period.period_end)
    # Setting non-marketing says what it saves from the next period.
    assert down.data["extra"]["cost"]["next_period"]["demote"] == 1
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
