"""A close, an import and a workflow run, each on a real worker killed with -9 in the middle,
then run again on a new worker: the end state is the one an uninterrupted run gives — the
counters equal the recount and the ledger replay, one invoice a period, each row once.

The jobs are made slow enough to kill deterministically by the worker's test knobs (small
chunks, a pause at each step: tests/faults/worker_app.py); the tests kill once the job has
reported progress (a saved chunk, a range marked done, a committed period) and before it ends.
"""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from billing.models import BillingPeriod, BillingPeriodStatus, Invoice
from billing.services import billing_close_periods
from billing.tasks import close_periods
from contacts.imports.models import ContactImport
from contacts.models import Contact
from contacts.status.models import StatusChange, StatusChangeRequest
from tests.faults.conftest import wait_for
from tests.faults.scenarios import (
    ended_periods_with_activity,
    import_file,
    mql_workflow,
    mqls,
)
from workflows.models import Enrollment, WorkflowRun, WorkflowRunChunk

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# Chunks of 500 and a pause of 0.5 s at each step (a busy machine still kills it mid-way); a
# lease of 6 s, renewed at each step (well above the longest step of a cold worker on a busy
# machine, so only a kill ends it).
SLOW = {"FAULTS_IMPORT_BATCH": 500, "FAULTS_WORKFLOW_BATCH": 500, "FAULTS_STEP_PAUSE": 0.5}
LEASE = {"JOB_LEASE_SECONDS": 6}


def read_until(api, url: str, status: str, worker) -> dict:
    """Read the job through its API until it says `status`."""
    return wait_for(
        lambda: (body := api.get(url).json())["status"] == status and body,
        f"{url} to be {status}",
        worker,
    )


def test_an_import_killed_while_saving_resumes_on_a_new_worker_to_the_uninterrupted_end(
    workers, account, api
):
    first = workers(**SLOW, **LEASE)
    uploaded = api.post(
        "/api/imports/",
        {"file": SimpleUploadedFile("people.csv", import_file(3_000).encode()), "marketing": True},
        format="multipart",
    ).json()
    url = f"/api/imports/{uploaded['id']}/"
    assert api.post(f"{url}commit/").status_code == 202

    # Given the worker is killed with two of its six chunks saved
    wait_for(
        lambda: ContactImport.objects.filter(
            pk=uploaded["id"], phase="saving", processed_rows__gte=1_000
        ).exists(),
        "two saved chunks",
        first,
    )
    first.kill()
    assert ContactImport.objects.get(pk=uploaded["id"]).status == "running"
    assert 1_000 <= Contact.objects.count() < 3_000

    # When its lease runs out, its API says so
    failed = read_until(api, url, "failed", first)
    assert failed["message"].startswith("The worker running this import stopped")

    # and resumed on a new worker, it ends as one uninterrupted run would
    second = workers(**LEASE)
    assert api.post(f"{url}resume/").status_code == 202
    done = read_until(api, url, "done", second)
    assert done["counts"] == {
        "rows": 3_000,
        "created": 3_000,
        "updated": 0,
        "unchanged": 0,
        "invalid": 0,
        "duplicates": 0,
        "marketing": 3_000,
        "imported": 3_000,
        "reported": 0,
    }
    assert Contact.objects.count() == Contact.objects.values("email").distinct().count() == 3_000
    assert StatusChange.objects.count() == 3_000  # one upgrade each
    assert StatusChangeRequest.objects.count() == 1
    call_command("verify_billing", periods=0)


def test_a_workflow_run_killed_mid_way_resumes_on_a_new_worker_to_the_uninterrupted_end(
    workers, account, api
):
    mqls(3_000)
    first = workers(**SLOW, **LEASE)
    run = api.post(f"/api/workflows/{mql_workflow().pk}/run/").json()
    url = f"/api/workflow-runs/{run['id']}/"

    # Given the worker is killed with two of the run's ranges done (the worker shares runs:
    # its ranges are tasks, which it takes one after the other)
    wait_for(
        lambda: (
            WorkflowRunChunk.objects.filter(run_id=run["id"], done_at__isnull=False).count() >= 2
        ),
        "two chunks",
        first,
    )
    first.kill()
    assert WorkflowRun.objects.get(pk=run["id"]).status == "running"
    assert 1_000 <= Enrollment.objects.count() < 3_000

    # When its lease runs out, its API says so
    failed = read_until(api, url, "failed", first)
    assert failed["error"].startswith("The worker running this workflow run stopped")

    # and resumed on a new worker, every MQL is enrolled and marketing once, counted once
    second = workers(**LEASE)
    assert api.post(f"{url}resume/").status_code == 202
    done = read_until(api, url, "done", second)
    assert (done["matched"], done["enrolled"], done["changed"]) == (3_000, 3_000, 3_000)
    assert Enrollment.objects.count() == StatusChange.objects.count() == 3_000
    assert Contact.objects.filter(marketing_status="marketing").count() == 3_000
    call_command("verify_billing", periods=0)


def test_a_close_killed_mid_period_closes_every_period_once_on_a_new_worker(workers, account):
    periods = ended_periods_with_activity(count=4, per_period=20)
    uninterrupted = [
        (outcome.period_start, outcome.peak_count, outcome.total)
        for outcome in billing_close_periods(dry_run=True)
    ]
    first = workers(FAULTS_STEP_PAUSE=1)

    # Given the worker is killed inside a period's transaction, at least two periods closed
    close_periods.delay()
    wait_for(
        lambda: BillingPeriod.objects.count() >= 2 and first.in_transaction(),
        "two closed periods and the next under way",
        first,
    )
    first.kill()
    # the period under way died with it: nothing of it is left, the others are whole
    closed_before = BillingPeriod.objects.count()
    assert 2 <= closed_before < len(periods)
    assert Invoice.objects.count() == closed_before

    # When the close runs again on a new worker (the beat's next hour, or a retry)
    second = workers()
    close_periods.delay()
    wait_for(lambda: Invoice.objects.count() == len(periods) or None, "the invoices", second)

    # Then every period is closed once, with the uninterrupted close's peak and total
    closed = BillingPeriod.objects.select_related("invoice").order_by("start")
    assert [(p.start, p.peak_count, p.invoice.total) for p in closed] == uninterrupted
    assert {p.status for p in closed} == {BillingPeriodStatus.CLOSED}
    assert [p.peak_count for p in closed] == [20, 40, 60, 80]
    call_command("verify_billing", periods=len(periods))
