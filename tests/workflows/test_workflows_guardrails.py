"""Workflow guardrails: the per-run limit and billing's hard cap hold a run; approval, rejection."""

import pytest

from contacts.models import Contact
from contacts.status.models import StatusChange
from tests.factories import ContactFactory, UserFactory, set_guardrails
from tests.workflows.wf_helpers import M, make_marketing, make_workflow
from workflows.models import Enrollment, RunStatus
from workflows.runs import (
    workflow_run_approve,
    workflow_run_execute,
    workflow_run_now,
    workflow_run_reject,
)
from workflows.services import RunNotAllowed

pytestmark = pytest.mark.django_db


@pytest.fixture
def mqls(db):
    return [ContactFactory(email=f"m{i}@x.com", lifecycle_stage="mql") for i in range(3)]


def nothing_written():
    return not StatusChange.objects.exists() and not Enrollment.objects.exists()


def test_a_run_past_its_limit_is_held_and_writes_nothing_until_approved(account, mqls):
    # Given a workflow allowed 2 new marketing contacts a run, and 3 MQLs
    workflow = make_workflow(max_new_marketing=2)

    # When it runs
    held = workflow_run_now(workflow=workflow)

    # Then it waits, with the reason, and nothing is written
    assert held.status == RunStatus.HELD
    assert held.hold_reason == (
        "It would make 3 contacts marketing, more than the workflow's per-run limit of 2"
    )
    assert (held.held_by_limit, held.held_by_billing, held.would_become_marketing) == (
        True,
        False,
        3,
    )
    assert nothing_written()

    # And Marketing ops may not approve it
    ops = UserFactory(username="ops", groups=["Marketing ops"])
    with pytest.raises(RunNotAllowed):
        workflow_run_approve(run=held, user=ops, execute=False)
    assert nothing_written()

    # When a billing admin approves it, it runs past the limit
    approver = UserFactory(username="boss", groups=["Billing admin"])
    approved = workflow_run_approve(run=held, user=approver, execute=False)
    assert (approved.status, approved.decided_by) == ("queued", approver)
    done = workflow_run_execute(run=approved)
    assert (done.status, done.enrolled, done.changed) == ("done", 3, 3)
    assert Contact.objects.filter(marketing_status=M).count() == 3


def test_a_rejected_run_never_runs(account, mqls):
    workflow = make_workflow(max_new_marketing=1)
    held = workflow_run_now(workflow=workflow)
    approver = UserFactory(username="boss", groups=["Billing admin"])

    rejected = workflow_run_reject(run=held, user=approver)

    assert (rejected.status, rejected.decided_by) == ("rejected", approver)
    assert workflow_run_execute(run=rejected).status == "rejected"
    assert nothing_written()


def test_billings_hard_cap_holds_the_run_and_only_billing_approval_releases_it(account, mqls):
    # Given a hard cap of 2 billable contacts
    set_guardrails(hard_cap=2)
    workflow = make_workflow()

    held = workflow_run_now(workflow=workflow)

    assert held.status == RunStatus.HELD
    assert (held.held_by_limit, held.held_by_billing) == (False, True)
    assert "past the hard cap of 2" in held.hold_reason
    assert nothing_written()

    # A workflows approver without billing.approve_overage cannot release it
    from django.contrib.auth.models import Permission

    runner = UserFactory(username="runner")
    runner.user_permissions.add(
        Permission.objects.get(codename="approve_run", content_type__app_label="workflows")
    )
    with pytest.raises(RunNotAllowed, match="billing.approve_overage"):
        workflow_run_approve(run=held, user=runner, execute=False)

    # A billing admin can: the run goes past the cap (approved overage)
    approver = UserFactory(username="boss", groups=["Billing admin"])
    done = workflow_run_execute(run=workflow_run_approve(run=held, user=approver, execute=False))
    assert (done.status, done.changed) == ("done", 3)


def test_a_run_within_the_guardrails_runs_at_once(account, mqls):
    set_guardrails(hard_cap=10)
    assert workflow_run_now(workflow=make_workflow(max_new_marketing=3)).status == "done"


def test_a_held_run_is_approved_or_rejected_through_the_api(
    account, mqls, django_capture_on_commit_callbacks
):
    from rest_framework.test import APIClient

    # Given two runs held past their limit
    first = workflow_run_now(workflow=make_workflow(name="first", max_new_marketing=2))
    second = workflow_run_now(workflow=make_workflow(name="second", max_new_marketing=2))
    ops, boss = APIClient(), APIClient()
    ops.force_authenticate(UserFactory(username="ops", groups=["Marketing ops"]))
    boss.force_authenticate(UserFactory(username="boss", groups=["Billing admin"]))

    # When Marketing ops tries to approve one: 403, and nothing is written
    response = ops.post(f"/api/workflow-runs/{first.pk}/approve/")
    assert response.status_code == 403
    assert "approve_run" in response.json()["detail"]
    assert nothing_written()

    # When the billing admin approves it, it runs; rejecting the other keeps it from running
    with django_capture_on_commit_callbacks(execute=True):
        approved = boss.post(f"/api/workflow-runs/{first.pk}/approve/")
    rejected = boss.post(f"/api/workflow-runs/{second.pk}/reject/")
    assert (approved.status_code, rejected.status_code) == (200, 200)
    assert rejected.json()["status"] == "rejected"
    first.refresh_from_db()
    assert (first.status, first.changed) == ("done", 3)
    assert Contact.objects.filter(marketing_status=M).count() == 3

    # And deciding again is a conflict
    again = boss.post(f"/api/workflow-runs/{second.pk}/approve/")
    assert again.status_code == 409


def test_the_hard_cap_holds_a_chunk_that_a_concurrent_change_pushed_past_it(
    account, mqls, monkeypatch
):
    # Given a run whose preflight saw room under the cap of 3...
    from workflows import runs

    set_guardrails(hard_cap=3, operation_limit=None)
    workflow = make_workflow()
    monkeypatch.setattr(runs, "workflow_hold_reasons", lambda workflow, status: ("", ""))
    # ...but by the time its chunk runs, other changes have taken the room
    make_marketing(ContactFactory(email="a@x.com"), ContactFactory(email="b@x.com"))

    held = workflow_run_now(workflow=workflow)

    # Then the chunk, checked under the usage lock, is held and rolled back whole
    assert held.status == RunStatus.HELD
    assert held.held_by_billing
    assert held.hold_reason.startswith("It would take the billable count to 5")
    assert not Enrollment.objects.exists()
    assert Contact.objects.filter(marketing_status=M).count() == 2
