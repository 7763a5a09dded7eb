"""Workflow triggers: contact events (only the changed contacts), the schedule, preview."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contacts.models import Contact
from contacts.services import contact_create, contact_update
from contacts.status.models import (
    StatusChange,
    StatusChangeRequest,
)
from tests.factories import ContactFactory, SourceFactory
from tests.workflows.wf_helpers import M, N, make_workflow, stage_is, statuses
from workflows.models import Enrollment, RunTrigger, Workflow, WorkflowRun
from workflows.runs import workflows_dispatch_due, workflows_on_contacts_changed
from workflows.services import workflow_preview

pytestmark = pytest.mark.django_db


def test_creating_or_updating_a_contact_runs_the_event_workflows_after_commit(
    account, django_capture_on_commit_callbacks
):
    # Given an event-triggered MQL workflow and one that is not event-triggered
    workflow = make_workflow(event_triggered=True)
    make_workflow("Nightly", event_triggered=False, criteria=stage_is("lead"))
    source = SourceFactory(name="Manual", kind="manual")

    # When a lead is created, then updated to MQL
    with django_capture_on_commit_callbacks(execute=True):
        contact = contact_create(email="new@x.com", source=source, lifecycle_stage="lead")
    assert statuses() == {"new@x.com": N}
    with django_capture_on_commit_callbacks(execute=True):
        contact_update(contact=contact, lifecycle_stage="mql")

    # Then only the event workflow ran, once, for that contact
    run = WorkflowRun.objects.get()
    assert (run.workflow_id, run.trigger, run.contact_ids, run.enrolled) == (
        workflow.pk,
        RunTrigger.EVENT,
        [contact.pk],
        1,
    )
    assert statuses() == {"new@x.com": M}


def test_a_rolled_back_update_triggers_nothing(account, django_capture_on_commit_callbacks):
    from django.db import transaction

    make_workflow(event_triggered=True)
    contact = ContactFactory(lifecycle_stage="lead")
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        contact_update(contact=contact, lifecycle_stage="mql")
        raise RuntimeError("rolled back")
    assert not WorkflowRun.objects.exists()


def test_an_event_evaluates_only_the_changed_contacts_in_a_constant_number_of_queries(account):
    # Given an event workflow and many matching contacts that were never evaluated
    workflow = make_workflow(event_triggered=True)
    others = Contact.objects.bulk_create(
        Contact(email=f"o{i}@x.com", lifecycle_stage="mql", source=SourceFactory(name="S"))
        for i in range(30)
    )
    changed = ContactFactory(email="changed@x.com", lifecycle_stage="mql")
    workflows_on_contacts_changed(contact_ids=[others[-1].pk])  # opens the period's counters
    Enrollment.objects.all().delete()
    StatusChange.objects.all().delete()

    # When one contact's change is evaluated
    with CaptureQueriesContext(connection) as one:
        workflows_on_contacts_changed(contact_ids=[changed.pk])

    # Then only it is enrolled and marketing
    assert list(Enrollment.objects.values_list("contact__email", flat=True)) == ["changed@x.com"]
    assert StatusChange.objects.get().contact_id == changed.pk

    # And two contacts at once cost the same number of queries (ids, not the table)
    with CaptureQueriesContext(connection) as two:
        workflows_on_contacts_changed(contact_ids=[others[0].pk, others[1].pk])
    assert len(two) == len(one)
    assert Enrollment.objects.filter(workflow=workflow).count() == 3
    assert Contact.objects.filter(marketing_status=M).count() == 4  # of 31 matching


def test_an_event_with_nothing_new_records_no_run(account):
    make_workflow(event_triggered=True)
    lead = ContactFactory(lifecycle_stage="lead")
    assert workflows_on_contacts_changed(contact_ids=[lead.pk]) == []
    assert not WorkflowRun.objects.exists()


def test_the_dispatcher_runs_due_scheduled_workflows_once(
    account, django_capture_on_commit_callbacks
):
    # Given a workflow every 60 minutes, never run, and one not scheduled
    ContactFactory(email="a@x.com", lifecycle_stage="mql")
    hourly = make_workflow(schedule_minutes=60)
    make_workflow("Manual only", criteria=stage_is("lead"))
    now = dt.datetime(2026, 3, 5, 12, 0, tzinfo=dt.UTC)

    # When the dispatcher runs, and again a minute later
    with django_capture_on_commit_callbacks(execute=True):
        first = workflows_dispatch_due(now=now)
        second = workflows_dispatch_due(now=now + dt.timedelta(minutes=1))

    # Then one run was queued and ran (eager here), the second call found nothing due
    assert len(first) == 1 and second == []
    run = WorkflowRun.objects.get()
    assert (run.workflow_id, run.trigger, run.status, run.enrolled) == (
        hourly.pk,
        "schedule",
        "done",
        1,
    )
    # And an hour after the last run it is due again
    assert Workflow.objects.get(pk=hourly.pk).last_run_at == now
    assert len(workflows_dispatch_due(now=now + dt.timedelta(minutes=60))) == 1


def test_the_dispatcher_skips_disabled_workflows(account):
    make_workflow(schedule_minutes=5, enabled=False)
    assert workflows_dispatch_due() == []


def test_the_beat_schedule_has_the_dispatcher(settings):
    assert (
        settings.CELERY_BEAT_SCHEDULE["dispatch-due-workflows"]["task"] == "workflows.dispatch_due"
    )


def test_preview_counts_samples_and_prices_without_writing(account):
    # Given 3 MQLs, one already marketing, and one lead
    people = [ContactFactory(email=f"m{i}@x.com", lifecycle_stage="mql") for i in range(3)]
    ContactFactory(email="lead@x.com")
    from tests.workflows.wf_helpers import make_marketing

    make_marketing(people[0])
    workflow = make_workflow()
    before = (
        StatusChange.objects.count(),
        StatusChangeRequest.objects.count(),
        Enrollment.objects.count(),
        WorkflowRun.objects.count(),
        statuses(),
    )

    preview = workflow_preview(workflow=workflow)

    assert (preview.matched, preview.would_enroll, preview.would_become_marketing) == (3, 3, 2)
    assert [c.email for c in preview.sample] == ["m2@x.com", "m1@x.com", "m0@x.com"]
    assert preview.cost["would_add"] == 2
    assert preview.hold_reasons == []
    after = (
        StatusChange.objects.count(),
        StatusChangeRequest.objects.count(),
        Enrollment.objects.count(),
        WorkflowRun.objects.count(),
        statuses(),
    )
    assert after == before
