"""A real Celery worker on Redis runs an import, a workflow run and the close end to end: the
web side (the API, or the beat's task for the close) enqueues, a separate worker process
runs it against the same PostgreSQL database, and the end state is checked."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from billing.models import BillingPeriod, BillingPeriodStatus, Invoice
from billing.tasks import close_periods
from contacts.imports.models import ContactImport, ImportChunk
from contacts.models import Contact
from contacts.status.models import StatusChange
from tests.faults.conftest import wait_for
from tests.faults.scenarios import (
    ended_periods_with_activity,
    import_file,
    mql_workflow,
    mqls,
)
from workflows.models import Enrollment, WorkflowRun, WorkflowRunChunk

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_an_import_committed_through_the_api_runs_on_the_worker(workers, account, api):
    worker = workers()
    uploaded = api.post(
        "/api/imports/",
        {"file": SimpleUploadedFile("people.csv", import_file(300).encode()), "marketing": True},
        format="multipart",
    )
    assert uploaded.status_code == 201, uploaded.content
    pk = uploaded.json()["id"]

    committed = api.post(f"/api/imports/{pk}/commit/")

    assert committed.status_code == 202
    assert committed.json()["status"] == "queued"
    done = wait_for(
        lambda: ContactImport.objects.filter(pk=pk, status="done").first(), "the import", worker
    )
    assert (done.created_count, done.marketing_count, done.lease_token) == (300, 300, "")
    assert Contact.objects.filter(marketing_status="marketing").count() == 300
    assert StatusChange.objects.count() == 300
    call_command("verify_billing", periods=0)


def test_a_workflow_run_requested_through_the_api_runs_on_the_worker(workers, account, api):
    worker = workers()
    mqls(200)
    workflow = mql_workflow()

    response = api.post(f"/api/workflows/{workflow.pk}/run/")

    assert response.status_code == 202
    pk = response.json()["id"]
    run = wait_for(
        lambda: WorkflowRun.objects.filter(pk=pk, status="done").first(), "the run", worker
    )
    assert (run.matched, run.enrolled, run.changed) == (200, 200, 200)
    assert Enrollment.objects.count() == StatusChange.objects.count() == 200
    call_command("verify_billing", periods=0)


def test_two_workers_share_a_workflow_run_and_do_each_range_once(workers, account, api):
    # Ranges of 500 ids and a pause as each range starts, so both workers have ranges to take
    knobs = {"FAULTS_WORKFLOW_BATCH": 500, "FAULTS_STEP_PAUSE": 0.2}
    first, second = workers(**knobs), workers(**knobs)
    mqls(3_000)

    response = api.post(f"/api/workflows/{mql_workflow().pk}/run/")

    assert response.status_code == 202
    pk = response.json()["id"]
    run = wait_for(
        lambda: WorkflowRun.objects.filter(pk=pk, status="done").first(), "the run", first
    )
    assert (run.matched, run.enrolled, run.changed) == (3_000, 3_000, 3_000)
    assert Enrollment.objects.count() == StatusChange.objects.count() == 3_000
    ranges = WorkflowRunChunk.objects.filter(run_id=pk)
    assert ranges.count() == ranges.filter(done_at__isnull=False).count() == 6
    # both workers took ranges, and no range was taken twice
    task = "workflows.run_workflow_chunk"
    taken = [first.received(task), second.received(task)]
    assert min(taken) > 0 and sum(taken) == 6, taken
    call_command("verify_billing", periods=0)


def test_two_workers_share_an_import_and_save_each_chunk_once(workers, account, api):
    # Chunks of 500 rows and a pause as each chunk starts, so both workers have chunks to take
    knobs = {"FAULTS_IMPORT_BATCH": 500, "FAULTS_STEP_PAUSE": 0.2}
    first, second = workers(**knobs), workers(**knobs)
    uploaded = api.post(
        "/api/imports/",
        {"file": SimpleUploadedFile("people.csv", import_file(3_000).encode()), "marketing": True},
        format="multipart",
    ).json()

    assert api.post(f"/api/imports/{uploaded['id']}/commit/").status_code == 202

    done = wait_for(
        lambda: ContactImport.objects.filter(pk=uploaded["id"], status="done").first(),
        "the import",
        first,
    )
    assert (done.created_count, done.marketing_count, done.lease_token) == (3_000, 3_000, "")
    assert Contact.objects.count() == StatusChange.objects.count() == 3_000
    chunks = ImportChunk.objects.filter(contact_import_id=done.pk)
    assert chunks.count() == chunks.filter(done_at__isnull=False).count() == 6
    # both workers took chunks, and no chunk was taken twice
    task = "contacts.upsert_import_chunk"
    taken = [first.received(task), second.received(task)]
    assert min(taken) > 0 and sum(taken) == 6, taken
    call_command("verify_billing", periods=0)


def test_the_close_queued_as_the_beat_queues_it_runs_on_the_worker(workers, account):
    worker = workers()
    periods = ended_periods_with_activity(count=3, per_period=20)

    close_periods.delay()  # what the beat's "close-billing-periods" entry sends

    wait_for(lambda: Invoice.objects.count() == len(periods) or None, "the invoices", worker)
    closed = BillingPeriod.objects.order_by("start")
    assert [p.start for p in closed] == [start for start, _ in periods]
    assert {p.status for p in closed} == {BillingPeriodStatus.CLOSED}
    assert [p.peak_count for p in closed] == [20, 40, 60]
    call_command("verify_billing", periods=len(periods))
