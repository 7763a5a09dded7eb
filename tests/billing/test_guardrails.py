import pytest

from billing.guardrails import (
    billing_approval_approve,
    billing_approval_reject,
    billing_cost_preview,
)
from contacts.models import Contact
from contacts.status.models import PendingApproval, StatusChange
from contacts.status.results import (
    ChangeHeld,
    StatusSource,
)
from contacts.status.services import (
    contacts_set_marketing,
    contacts_status_preview,
)
from tests.factories import UserFactory, set_guardrails

SRC = StatusSource("bulk_action", name="guardrail test")


def test_the_cost_preview_prices_the_new_peak(subscription):
    cost = billing_cost_preview(live_count=6_000, peak_count=6_150, would_add=1_001)
    assert (cost["peak_after"], cost["blocks_before"], cost["blocks_after"]) == (7_001, 1, 2)
    assert (cost["total_before"], cost["total_after"], cost["invoice_delta"]) == (
        102_500,
        125_000,
        22_500,
    )
    assert (
        billing_cost_preview(live_count=100, peak_count=6_150, would_add=10)["invoice_delta"] == 0
    )


def test_every_status_preview_carries_its_cost(account, subscription, make_contacts):
    preview = contacts_status_preview(contacts=make_contacts(2_001), operation="set_marketing")
    assert preview.extra["cost"]["invoice_delta"] == 22_500
    assert preview.extra["cost"]["blocks_after"] == 1


def test_an_operation_past_the_limit_waits_for_approval_and_writes_nothing(
    account, subscription, make_contacts
):
    set_guardrails(operation_limit=10)
    requester = UserFactory(username="ops")
    people = make_contacts(11)

    with pytest.raises(ChangeHeld, match="per-operation limit of 10"):
        contacts_set_marketing(
            contacts=people, source=SRC, actor=requester, guarded=True, idempotency_key="big"
        )
    with pytest.raises(ChangeHeld):  # a retry does not make a second approval
        contacts_set_marketing(
            contacts=people, source=SRC, actor=requester, guarded=True, idempotency_key="big"
        )

    assert not StatusChange.objects.exists()
    approval = PendingApproval.objects.get()
    assert (approval.status, approval.new_marketing, approval.requested_by) == (
        "pending",
        11,
        requester,
    )

    approver = UserFactory(username="cfo")
    approved = billing_approval_approve(approval=approval, user=approver)

    assert (approved.status, approved.decided_by, approved.result["changed"]) == (
        "approved",
        approver,
        11,
    )
    assert Contact.objects.filter(marketing_status="marketing").count() == 11
    assert billing_approval_approve(approval=approval, user=approver).result["changed"] == 11
    assert StatusChange.objects.count() == 11


def test_a_rejected_operation_never_runs(account, subscription, make_contacts):
    set_guardrails(hard_cap=5)
    with pytest.raises(ChangeHeld, match="hard cap of 5"):
        contacts_set_marketing(
            contacts=list(make_contacts(6).values_list("pk", flat=True)), source=SRC, guarded=True
        )
    approval = PendingApproval.objects.get()
    rejected = billing_approval_reject(approval=approval, user=UserFactory(username="cfo"))
    assert rejected.status == "rejected"
    assert (
        billing_approval_approve(approval=rejected, user=UserFactory(username="cfo")).status
        == "rejected"
    )
    assert not StatusChange.objects.exists()


def test_operations_within_the_guardrails_run_at_once(account, subscription, make_contacts):
    result = contacts_set_marketing(contacts=make_contacts(5), source=SRC, guarded=True)
    assert result.changed == 5
    assert not PendingApproval.objects.exists()


def test_only_billing_admins_may_approve_overage(db):
    from django.contrib.auth.models import Group

    holders = Group.objects.filter(permissions__codename="approve_overage").values_list(
        "name", flat=True
    )
    assert list(holders) == ["Billing admin"]


def test_the_preview_says_beforehand_that_a_change_would_wait(account, subscription, make_contacts):
    set_guardrails(operation_limit=3)
    held = contacts_status_preview(contacts=make_contacts(4), operation="set_marketing")
    fine = contacts_status_preview(contacts=make_contacts(2), operation="set_marketing")
    assert "per-operation limit of 3" in held.extra["cost"]["hold_reason"]
    assert fine.extra["cost"]["hold_reason"] is None
