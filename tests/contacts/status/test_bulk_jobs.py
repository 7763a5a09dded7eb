"""Bulk status changes run in the background: chunks, counts, idempotent retries, a worker
killed half-way and resumed, and the guardrails holding a job for approval.

A worker killed with -9 is simulated by an exception no handler catches (`WorkerKilled`, a
BaseException) raised from the status service between two chunks.
"""

import pytest
from django.utils import timezone

from contacts.models import Contact
from contacts.status import bulk
from contacts.status.bulk import (
    BulkJobStateError,
    bulk_status_job_resume,
    bulk_status_job_run,
    bulk_status_job_submit,
    bulk_status_job_sync,
)
from contacts.status.models import (
    BulkJobStatus,
    BulkStatusJob,
    PendingApproval,
    PeriodUsage,
    StatusChange,
)
from contacts.status.results import (
    SET_MARKETING,
    SET_NON_MARKETING,
    IdempotencyConflict,
    StatusSource,
)
from contacts.status.selectors import ledger_replay, usage_current
from contacts.status.services import contacts_set_marketing
from crm.tasks import expire_stale_jobs
from tests.factories import ContactFactory, UserFactory, set_guardrails

M, N = "marketing", "non_marketing"


class WorkerKilled(BaseException):
    """Stands for kill -9: no `except Exception` sees it, nothing records it."""


@pytest.fixture
def manual():
    return StatusSource("manual", name="test")


@pytest.fixture
def leads(account):
    """Seven leads (the job's target) and two customers (not in it)."""
    ContactFactory.create_batch(2, lifecycle_stage="customer")
    return ContactFactory.create_batch(7, lifecycle_stage="lead")


def submit(actor, operation=SET_MARKETING, key="job-1", criteria=None):
    job, created = bulk_status_job_submit(
        contacts=Contact.objects.filter(lifecycle_stage="lead"),
        operation=operation,
        criteria=criteria or {"lifecycle_stage__exact": "lead"},
        origin="admin",
        actor=actor,
        idempotency_key=key,
        enqueue=False,
    )
    return job, created


def counts(job) -> tuple:
    job.refresh_from_db()
    return (job.status, job.total, job.done, job.changed, job.cancelled, job.already, job.held)


def books_balance() -> None:
    usage = PeriodUsage.objects.get()
    replay = ledger_replay(start=usage.period_start, end=usage.period_end)
    live = Contact.objects.billable(timezone.now()).count()
    assert (replay.peak_count, replay.closing_count) == (usage.peak_count, usage.live_count)
    assert usage.live_count == live


def test_a_job_goes_through_its_frozen_target_in_chunks(marketing_ops, leads, manual):
    contacts_set_marketing(contacts=leads[0], source=manual)
    job, created = submit(marketing_ops)
    late = ContactFactory(lifecycle_stage="lead")  # after the submit: not in the job

    job = bulk_status_job_run(job_id=job.pk, chunk=3)

    assert created
    assert counts(job) == (BulkJobStatus.DONE, 7, 7, 6, 0, 1, 0)
    assert job.cursor == leads[-1].pk
    assert set(Contact.objects.filter(marketing_status=M).values_list("pk", flat=True)) == {
        c.pk for c in leads
    }
    late.refresh_from_db()
    assert late.marketing_status == N
    # Three chunks of the one status service, each its own request and ledger rows.
    rows = StatusChange.objects.filter(source_type="bulk_action", source_id=str(job.pk))
    assert rows.count() == 6
    assert rows.values("request_id").distinct().count() == 3
    assert {row.actor_id for row in rows} == {marketing_ops.pk}
    books_balance()


def test_a_non_marketing_job_schedules_downgrades(marketing_ops, leads, manual):
    contacts_set_marketing(contacts=[c.pk for c in leads[:5]], source=manual)
    job, _ = submit(marketing_ops, operation=SET_NON_MARKETING)

    job = bulk_status_job_run(job_id=job.pk, chunk=2)

    assert counts(job) == (BulkJobStatus.DONE, 7, 7, 5, 0, 2, 0)
    assert job.effective_from == usage_current().period_end
    assert usage_current().pending_downgrades == 5
    books_balance()


def test_a_retry_with_the_same_key_returns_the_same_job(marketing_ops, leads):
    first, created = submit(marketing_ops)
    bulk_status_job_run(job_id=first.pk)
    ledger = StatusChange.objects.count()

    again, created_again = submit(marketing_ops)
    bulk_status_job_run(job_id=again.pk)  # finished: nothing to do

    assert (created, created_again) == (True, False)
    assert again.pk == first.pk
    assert BulkStatusJob.objects.count() == 1
    assert StatusChange.objects.count() == ledger


def test_the_same_key_for_another_request_is_refused(marketing_ops, leads):
    submit(marketing_ops)

    with pytest.raises(IdempotencyConflict):
        submit(marketing_ops, criteria={"lifecycle_stage__exact": "customer"})

    assert BulkStatusJob.objects.count() == 1


def test_a_worker_killed_half_way_is_failed_then_resumed_without_doing_twice(
    marketing_ops, leads, monkeypatch, django_capture_on_commit_callbacks
):
    job, _ = submit(marketing_ops)
    real = bulk.contacts_set_marketing
    calls = []

    def dies_on_the_third_chunk(**kwargs):
        calls.append(kwargs["idempotency_key"])
        if len(calls) == 3:
            raise WorkerKilled
        return real(**kwargs)

    monkeypatch.setattr(bulk, "contacts_set_marketing", dies_on_the_third_chunk)
    with pytest.raises(WorkerKilled):
        bulk_status_job_run(job_id=job.pk, chunk=2)
    assert counts(job)[:4] == (BulkJobStatus.RUNNING, 7, 4, 4)

    # A redelivered task while the lease is live does nothing.
    assert bulk_status_job_run(job_id=job.pk, chunk=2).done == 4
    # The lease runs out: the beat marks it failed with a sentence saying so.
    BulkStatusJob.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now())
    assert expire_stale_jobs()["failed"] == 1
    job.refresh_from_db()
    assert job.status == BulkJobStatus.FAILED
    assert "lease ran out" in job.message

    monkeypatch.setattr(bulk, "contacts_set_marketing", real)
    with django_capture_on_commit_callbacks(execute=True):
        bulk_status_job_resume(job=job)

    assert counts(job) == (BulkJobStatus.DONE, 7, 7, 7, 0, 0, 0)
    # The third chunk is asked again with the same key and contacts.
    rows = StatusChange.objects.filter(source_id=str(job.pk))
    assert rows.count() == 7
    assert rows.values("request_id").distinct().count() == 4
    assert Contact.objects.filter(marketing_status=M).count() == 7
    books_balance()


def test_a_finished_job_cannot_be_resumed(marketing_ops, leads):
    job, _ = submit(marketing_ops)
    bulk_status_job_run(job_id=job.pk)

    with pytest.raises(BulkJobStateError, match="finished"):
        bulk_status_job_resume(job=job)


def test_past_the_hard_cap_the_whole_job_is_held_then_runs_on_approval(
    marketing_ops, leads, superuser, django_capture_on_commit_callbacks
):
    from billing.guardrails import billing_approval_approve

    set_guardrails(hard_cap=5)
    job, _ = submit(marketing_ops)

    job = bulk_status_job_run(job_id=job.pk, chunk=2)

    assert counts(job) == (BulkJobStatus.HELD, 7, 0, 0, 0, 0, 7)
    assert job.message.startswith("Nothing was changed yet. Waiting for approval #")
    assert "past the hard cap of 5" in job.message
    approval = PendingApproval.objects.get()
    assert job.approval == approval
    assert approval.contact_ids == [c.pk for c in leads]
    assert StatusChange.objects.count() == 0
    assert bulk_status_job_sync(job=job).status == BulkJobStatus.HELD  # still waiting

    billing_approval_approve(approval=approval, user=superuser)
    job = bulk_status_job_sync(job=job)

    assert counts(job) == (BulkJobStatus.DONE, 7, 7, 7, 0, 0, 0)
    assert Contact.objects.filter(marketing_status=M).count() == 7
    books_balance()


def test_a_chunk_past_the_hard_cap_holds_the_rest_and_approval_lets_it_go_on(
    marketing_ops, leads, superuser, monkeypatch, django_capture_on_commit_callbacks
):
    from billing.guardrails import billing_approval_approve

    set_guardrails(hard_cap=5)
    # The whole set fitted when the job started (another change took the room since).
    monkeypatch.setattr(bulk, "_needs_whole_hold", lambda job, now: False)
    job, _ = submit(marketing_ops)

    job = bulk_status_job_run(job_id=job.pk, chunk=2)

    assert counts(job) == (BulkJobStatus.HELD, 7, 4, 4, 0, 0, 2)
    assert job.message.startswith("4 of 7 contacts were done; the rest waits.")
    assert Contact.objects.filter(marketing_status=M).count() == 4

    billing_approval_approve(approval=job.approval, user=superuser)
    with django_capture_on_commit_callbacks(execute=True):
        job = bulk_status_job_sync(job=job)

    # Queued again: the approved chunk replays its result and the last one is held again.
    assert counts(job) == (BulkJobStatus.HELD, 7, 6, 6, 0, 0, 1)
    assert PendingApproval.objects.count() == 2
    books_balance()


def test_a_rejected_hold_stops_the_job(marketing_ops, leads, superuser):
    from billing.guardrails import billing_approval_reject

    set_guardrails(hard_cap=5)
    job, _ = submit(marketing_ops)
    job = bulk_status_job_run(job_id=job.pk)

    billing_approval_reject(approval=job.approval, user=superuser)
    job = bulk_status_job_sync(job=job)

    assert job.status == BulkJobStatus.REJECTED
    assert "rejected" in job.message
    assert Contact.objects.filter(marketing_status=M).count() == 0


@pytest.mark.postgres  # the worker thread needs its own connection to a real database
def test_a_real_worker_runs_a_job(roles, account):
    import time

    from celery import Celery
    from celery._state import get_current_app
    from celery.contrib.testing.worker import start_worker

    from contacts.tasks import run_bulk_status_job
    from tests.contacts.test_worker import BROKER, redis_up

    if not redis_up():
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    ContactFactory.create_batch(5, lifecycle_stage="lead")
    job, _ = submit(UserFactory(username="ops", groups=["Marketing ops"]))
    previous = get_current_app()  # put back afterwards (see tests/contacts/test_worker.py)
    app = Celery("bulk-job-worker-test")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(broker_url=BROKER, task_always_eager=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
            app.send_task(run_bulk_status_job.name, args=[job.pk])
            deadline = time.monotonic() + 30  # waits for the worker; asserts nothing about speed
            while time.monotonic() < deadline and counts(job)[0] != BulkJobStatus.DONE:
                time.sleep(0.1)
    finally:
        previous.set_default()
        previous.set_current()

    assert counts(job) == (BulkJobStatus.DONE, 5, 5, 5, 0, 0, 0)
    assert Contact.objects.filter(marketing_status=M).count() == 5
