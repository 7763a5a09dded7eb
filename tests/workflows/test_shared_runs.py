"""A workflow run shared by the workers: the run records its ranges of contact ids, queues one
task per range, and any worker takes any range, in any order, once or twice. It ends as the
run in one process ends — the same enrollments, changes, emails and counts — and a range is
never done or counted twice.

The queue is stood in for by a list (`queue`): a test delivers the queued ranges when and
how often it likes, as workers would. tests/faults/ runs them on real workers.
"""

import datetime as dt

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from contacts.models import Contact
from contacts.status.models import StatusChange
from tests.factories import ContactFactory, UserFactory, set_guardrails
from tests.workflows.wf_helpers import WorkerKilled, make_workflow
from workflows import runs, tasks
from workflows.models import Enrollment, RunStatus, RunTrigger, WorkflowRun, WorkflowRunChunk
from workflows.runs import (
    workflow_run_approve,
    workflow_run_chunk_execute,
    workflow_run_execute,
    workflow_run_request,
    workflow_run_resume,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def mqls(account, monkeypatch):
    """Five MQLs and two leads over four ranges of two ids."""
    monkeypatch.setattr(runs, "WORKFLOW_RANGE_BATCH", 2)
    stages = ["mql", "lead", "mql", "mql", "lead", "mql", "mql"]
    return [
        ContactFactory(email=f"p{i}@x.com", lifecycle_stage=stage) for i, stage in enumerate(stages)
    ]


@pytest.fixture
def queue(settings, monkeypatch) -> list[tuple]:
    """Runs are shared; the ranges' tasks are kept here instead of being run."""
    settings.WORKFLOW_RUNS_SHARED = True
    queued: list[tuple] = []
    monkeypatch.setattr(tasks.run_workflow_chunk, "delay", lambda *args: queued.append(args))
    return queued


def deliver(args: tuple) -> str:
    run_id, lo, token, preflight_done = args
    return workflow_run_chunk_execute(
        run_id=run_id, lo=lo, token=token, preflight_done=preflight_done
    )


def welcome_workflow(welcome):
    return make_workflow(
        actions=[
            {"type": "set_marketing"},
            {"type": "set_property", "field": "lead_status", "value": "open"},
            {"type": "send_marketing_email", "email": welcome.pk},
        ]
    )


def started(workflow) -> WorkflowRun:
    run = workflow_run_request(workflow=workflow, trigger=RunTrigger.API, enqueue=False)
    return workflow_run_execute(run=run)


def assert_every_mql_done_once(run: WorkflowRun, mqls) -> None:
    """What the run in one process gives (test_a_run_ends_the_same_shared_or_not)."""
    mql_ids = sorted(c.pk for c in mqls if c.lifecycle_stage == "mql")
    run.refresh_from_db()
    assert (run.status, run.matched, run.enrolled, run.changed, run.refused) == (
        "done",
        5,
        5,
        5,
        0,
    )
    assert run.results == {
        "1:set_marketing": {"changed": 5, "cancelled": 0},
        "2:set_property": {"changed": 5},
        "3:send_marketing_email": {
            "sent": 5,
            "refused_non_marketing": 0,
            "refused_unsubscribed": 0,
            "refused_bounced": 0,
        },
    }
    assert sorted(Enrollment.objects.values_list("contact_id", flat=True)) == mql_ids
    assert sorted(StatusChange.objects.values_list("contact_id", flat=True)) == mql_ids
    assert (
        sorted(Contact.objects.filter(lead_status="open").values_list("pk", flat=True)) == mql_ids
    )
    assert sorted(m.to[0] for m in mail.outbox) == sorted(
        c.email for c in mqls if c.lifecycle_stage == "mql"
    )
    call_command("verify_billing", periods=0)


@pytest.mark.parametrize("shared", [False, True], ids=["one process", "shared"])
def test_a_run_ends_the_same_shared_or_not(mqls, welcome, settings, shared):
    settings.WORKFLOW_RUNS_SHARED = shared  # without a broker, the ranges' tasks run here

    run = started(welcome_workflow(welcome))

    assert_every_mql_done_once(run, mqls)
    assert WorkflowRunChunk.objects.filter(run=run).count() == (4 if shared else 0)


def test_the_run_queues_a_task_per_range_and_the_last_range_finishes_it(mqls, welcome, queue):
    run = started(welcome_workflow(welcome))

    # The run is running, under one lease, its four ranges recorded and queued
    assert run.status == RunStatus.RUNNING
    ranges = list(WorkflowRunChunk.objects.filter(run=run).values_list("lo", "hi"))
    first = mqls[0].pk
    assert ranges == [(first + 2 * n, first + 2 * n + 2) for n in range(4)]
    assert [(args[0], args[1], args[2]) for args in queue] == [
        (run.pk, lo, run.lease_token) for lo, _ in ranges
    ]
    assert not Enrollment.objects.exists()

    # When workers take the ranges in any order, the run is done after the last one
    outcomes = [deliver(args) for args in reversed(queue)]

    assert outcomes == ["done"] * 4
    assert_every_mql_done_once(run, mqls)
    assert not WorkflowRunChunk.objects.filter(done_at=None).exists()
    assert not WorkflowRunChunk.objects.filter(emailed_at=None).exists()


def test_a_range_delivered_twice_is_done_and_counted_once(mqls, welcome, queue):
    run = started(welcome_workflow(welcome))
    first = WorkflowRunChunk.objects.get(run=run, lo=queue[0][1])  # read before it is done

    assert deliver(queue[0]) == "done"
    # A second delivery that read the range before the first one committed rolls back
    with pytest.raises(runs._ChunkDoneAlready):
        runs._run_chunk(
            run,
            run.workflow,
            lease=runs.jobs.Lease(WorkflowRun, run.pk, queue[0][2]),
            now=run.as_of,
            ids=None,
            lo=first.lo,
            hi=first.hi,
            chunk=first,
        )
    # and one that comes later does nothing
    assert deliver(queue[0]) == "done already"
    for args in queue[1:]:
        deliver(args)

    assert_every_mql_done_once(run, mqls)
    assert deliver(queue[0]) == "done already"


def test_a_range_that_fails_fails_the_run_and_a_resume_queues_only_what_is_left(
    mqls, welcome, queue, monkeypatch
):
    run = started(welcome_workflow(welcome))
    assert deliver(queue[0]) == "done"

    # Given the second range stops on an error
    set_property = runs.contacts_set_property
    monkeypatch.setattr(runs, "contacts_set_property", lambda **kwargs: 1 / 0)
    assert deliver(queue[1]) == "failed"
    monkeypatch.setattr(runs, "contacts_set_property", set_property)
    failed = WorkflowRun.objects.get(pk=run.pk)
    assert failed.status == RunStatus.FAILED
    assert failed.error == "The run stopped on an error (ZeroDivisionError: division by zero)."

    # the ranges still queued under its lease do nothing
    assert [deliver(args) for args in queue[2:]] == ["lease lost", "lease lost"]
    assert Enrollment.objects.count() == 1  # the first range's one MQL

    # When it is resumed, only the three ranges left are queued, under a new lease
    queue.clear()
    resumed = workflow_run_resume(run=failed, enqueue=False)
    resumed = workflow_run_execute(run=resumed)
    assert [args[1] for args in queue] == [mqls[2].pk, mqls[4].pk, mqls[6].pk]
    assert {args[2] for args in queue} == {resumed.lease_token} != {failed.lease_token}

    # and once they are done, every MQL is done and counted once
    assert [deliver(args) for args in queue] == ["done"] * 3
    assert_every_mql_done_once(run, mqls)


def test_a_range_whose_worker_died_before_its_email_sends_it_on_resume(
    mqls, welcome, queue, settings, monkeypatch
):
    run = started(welcome_workflow(welcome))
    send = runs.marketing_email_send

    # Given the worker of the first range died after the range's commit, before its email
    def dies(**kwargs):
        raise WorkerKilled

    monkeypatch.setattr(runs, "marketing_email_send", dies)
    with pytest.raises(WorkerKilled):
        deliver(queue[0])
    monkeypatch.setattr(runs, "marketing_email_send", send)
    chunk = WorkflowRunChunk.objects.get(run=run, lo=queue[0][1])
    assert (chunk.done_at is not None, chunk.emailed_at, len(mail.outbox)) == (True, None, 0)

    # and the others were taken meanwhile
    for args in queue[1:]:
        assert deliver(args) == "done"
    assert WorkflowRun.objects.get(pk=run.pk).status == RunStatus.RUNNING

    # When its lease runs out and the run is resumed, the first range's email goes, once
    later = timezone.now() + dt.timedelta(seconds=settings.JOB_LEASE_SECONDS + 1)
    assert runs.jobs.jobs_expire_stale(model=WorkflowRun, now=later) == 1
    queue.clear()
    resumed = workflow_run_execute(run=workflow_run_resume(run=run, enqueue=False))
    assert [args[1] for args in queue] == [chunk.lo]
    assert deliver(queue[0]) == "done"
    assert resumed.status == RunStatus.RUNNING
    assert_every_mql_done_once(run, mqls)


def test_the_command_resumes_a_shared_run_in_its_own_process(
    mqls, welcome, queue, monkeypatch, capsys
):
    run = started(welcome_workflow(welcome))
    deliver(queue[0])
    monkeypatch.setattr(runs, "contacts_set_property", lambda **kwargs: 1 / 0)
    deliver(queue[1])
    monkeypatch.undo()  # the fault, the queue's stand-in and the range width
    monkeypatch.setattr(runs, "WORKFLOW_RANGE_BATCH", 2)

    call_command("run_workflows", "--resume", str(run.pk))

    assert f"run #{run.pk} done: 5 matched" in capsys.readouterr().out
    assert_every_mql_done_once(run, mqls)


def test_the_run_page_says_how_many_ranges_are_done(mqls, welcome, queue, settings, client):
    shared = started(welcome_workflow(welcome))
    for args in queue[:2]:
        deliver(args)
    settings.WORKFLOW_RUNS_SHARED = False
    alone = started(make_workflow("Another", actions=[{"type": "set_marketing"}]))
    client.force_login(UserFactory(username="watcher", is_superuser=True))

    def page(run) -> str:
        return client.get(f"/admin/workflows/workflowrun/{run.pk}/change/").content.decode()

    # A shared run shows its ranges, and not the cursors it does not use
    assert "Ranges shared by the workers" in page(shared)
    assert "2 of 4 done" in page(shared)
    assert "Emailed through" not in page(shared)
    # and each action's counts in words
    assert "1. Set as marketing contact: 3 changed, 0 cancelled" in page(shared)
    assert "2. Set lifecycle stage or lead status: 3 changed" in page(shared)
    assert (
        "3. Send a marketing email: 3 sent, 0 refused (not marketing contacts), "
        "0 refused (unsubscribed), 0 refused (bounced)"
    ) in page(shared)
    # a run in one process its cursors, and no ranges
    assert "Emailed through" in page(alone)
    assert "Ranges shared by the workers" not in page(alone)


def test_a_range_the_hard_cap_holds_holds_the_run_and_approval_queues_what_is_left(
    mqls, welcome, queue, monkeypatch
):
    # Given a run whose preflight saw room under the hard cap of 2 (it is bypassed here)...
    set_guardrails(hard_cap=2, operation_limit=None)
    monkeypatch.setattr(runs, "workflow_hold_reasons", lambda workflow, status: ("", ""))
    run = started(welcome_workflow(welcome))

    # ...the first range (one MQL) runs, the second (two MQLs) would pass the cap: held
    assert deliver(queue[0]) == "done"
    assert deliver(queue[1]) == "held"
    held = WorkflowRun.objects.get(pk=run.pk)
    assert (held.status, held.held_by_billing) == (RunStatus.HELD, True)
    assert held.hold_reason.startswith("It would take the billable count to 3")
    assert [deliver(args) for args in queue[2:]] == ["lease lost", "lease lost"]
    assert Contact.objects.filter(marketing_status="marketing").count() == 1

    # When billing's approver approves it, the three ranges left are queued and run
    queue.clear()
    approver = UserFactory(username="approver", is_superuser=True)
    approved = workflow_run_approve(run=held, user=approver, execute=False)
    workflow_run_execute(run=approved)
    assert [args[1] for args in queue] == [mqls[2].pk, mqls[4].pk, mqls[6].pk]
    assert [deliver(args) for args in queue] == ["done"] * 3
    assert_every_mql_done_once(run, mqls)


def test_a_workflow_whose_run_was_shared_is_deleted_with_its_runs_and_ranges(
    mqls, welcome, settings, client
):
    settings.WORKFLOW_RUNS_SHARED = True
    workflow = welcome_workflow(welcome)
    started(workflow)
    client.force_login(UserFactory(username="ops", is_superuser=True))
    url = f"/admin/workflows/workflow/{workflow.pk}/delete/"

    assert client.get(url).status_code == 200
    response = client.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert not WorkflowRun.objects.exists()
    assert not WorkflowRunChunk.objects.exists()
    assert not Enrollment.objects.exists()
