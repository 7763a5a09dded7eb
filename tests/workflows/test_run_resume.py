"""A workflow run whose worker dies: its lease runs out, it is marked failed when read (or by
the beat), and a resume finishes it with nothing done or counted twice — the email of a
chunk committed before the worker died included. A live lease keeps a redelivered task
from running it twice.

A worker killed with -9 is simulated by an exception no handler catches (`WorkerKilled`);
tests/faults/ kills a real one.
"""

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from contacts.status.models import StatusChange
from tests.factories import ContactFactory, UserFactory
from tests.workflows.wf_helpers import WorkerKilled, make_workflow
from workflows import runs
from workflows.models import Enrollment, RunStatus, RunTrigger, WorkflowRun
from workflows.runs import workflow_run_execute, workflow_run_request

pytestmark = pytest.mark.django_db
RUNS = "/api/workflow-runs/"


@pytest.fixture
def runner(db):
    return UserFactory(username="runner", is_superuser=True)


@pytest.fixture
def api(runner):
    client = APIClient()
    client.force_authenticate(runner)
    return client


@pytest.fixture
def mqls(account, monkeypatch):
    """Five MQLs over three chunks of two ids."""
    monkeypatch.setattr(runs, "WORKFLOW_RANGE_BATCH", 2)
    return [ContactFactory(email=f"p{i}@x.com", lifecycle_stage="mql") for i in range(5)]


def killed_before_the_first_chunks_email(workflow, monkeypatch) -> WorkflowRun:
    """A run whose worker dies once its first chunk has committed, before that chunk's email."""
    queued = workflow_run_request(workflow=workflow, trigger=RunTrigger.API, enqueue=False)
    send = runs.marketing_email_send

    def dies(**kwargs):
        raise WorkerKilled

    monkeypatch.setattr(runs, "marketing_email_send", dies)
    with pytest.raises(WorkerKilled):
        workflow_run_execute(run=queued)
    monkeypatch.setattr(runs, "marketing_email_send", send)
    return WorkflowRun.objects.get(pk=queued.pk)


def test_a_killed_run_is_failed_when_read_and_resumed_does_nothing_twice(
    mqls, welcome, api, settings, monkeypatch, django_capture_on_commit_callbacks
):
    workflow = make_workflow(
        actions=[{"type": "set_marketing"}, {"type": "send_marketing_email", "email": welcome.pk}]
    )
    # Given the worker died after the first chunk's commit, and its lease then ran out
    settings.JOB_LEASE_SECONDS = 0
    stuck = killed_before_the_first_chunks_email(workflow, monkeypatch)
    settings.JOB_LEASE_SECONDS = 300
    assert stuck.status == RunStatus.RUNNING
    assert (Enrollment.objects.count(), StatusChange.objects.count(), len(mail.outbox)) == (2, 2, 0)

    # When its API is read, it says the worker stopped
    failed = api.get(f"{RUNS}{stuck.pk}/").json()
    assert failed["status"] == "failed"
    assert failed["error"].startswith("The worker running this workflow run stopped")

    # and once resumed, every MQL is enrolled, made marketing and emailed exactly once,
    # the first chunk's email included, and counted once
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"{RUNS}{stuck.pk}/resume/")
    assert response.status_code == 202, response.content
    done = WorkflowRun.objects.get(pk=stuck.pk)
    assert (done.status, done.matched, done.enrolled, done.changed) == ("done", 5, 5, 5)
    assert done.results == {
        "1:set_marketing": {"changed": 5, "cancelled": 0},
        "2:send_marketing_email": {
            "sent": 5,
            "refused_non_marketing": 0,
            "refused_unsubscribed": 0,
            "refused_bounced": 0,
        },
    }
    assert sorted(m.to[0] for m in mail.outbox) == sorted(c.email for c in mqls)
    assert sorted(StatusChange.objects.values_list("contact_id", flat=True)) == sorted(
        c.pk for c in mqls
    )
    assert Enrollment.objects.count() == 5
    call_command("verify_billing", periods=0)


def test_the_beat_task_fails_the_runs_whose_worker_died(mqls, settings):
    from crm.tasks import expire_stale_jobs

    run = workflow_run_request(workflow=make_workflow(), trigger=RunTrigger.API, enqueue=False)
    WorkflowRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING, lease_token="gone", lease_expires_at=timezone.now()
    )

    assert expire_stale_jobs() == {"failed": 1}
    run.refresh_from_db()
    assert (run.status, run.finished_at is not None) == ("failed", True)
    assert "stopped: its lease ran out at" in run.error


def test_a_live_lease_keeps_a_redelivered_task_from_running_the_run_twice(mqls, api):
    run = workflow_run_request(workflow=make_workflow(), trigger=RunTrigger.API, enqueue=False)
    WorkflowRun.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        lease_token="alive",
        lease_expires_at=timezone.now() + timezone.timedelta(minutes=5),
    )

    again = workflow_run_execute(run=run)
    read = api.get(f"{RUNS}{run.pk}/").json()
    resumed = api.post(f"{RUNS}{run.pk}/resume/")

    assert (again.status, read["status"]) == ("running", "running")
    assert not Enrollment.objects.exists()
    assert resumed.status_code == 409
    assert f"Run #{run.pk} is running" in resumed.json()["detail"]


def test_only_a_failed_run_is_resumed(mqls, api):
    run = workflow_run_execute(
        run=workflow_run_request(workflow=make_workflow(), trigger=RunTrigger.API, enqueue=False)
    )

    response = api.post(f"{RUNS}{run.pk}/resume/")

    assert response.status_code == 409
    assert response.json() == {"detail": f"Run #{run.pk} is done; only a failed run is resumed."}


def test_the_command_resumes_a_failed_run(mqls, welcome, settings, monkeypatch, capsys):
    workflow = make_workflow(
        actions=[{"type": "set_marketing"}, {"type": "send_marketing_email", "email": welcome.pk}]
    )
    settings.JOB_LEASE_SECONDS = 0
    stuck = killed_before_the_first_chunks_email(workflow, monkeypatch)

    call_command("run_workflows", "--resume", str(stuck.pk))

    done = WorkflowRun.objects.get(pk=stuck.pk)
    assert (done.status, done.matched, done.changed, len(mail.outbox)) == ("done", 5, 5, 5)
    assert f"run #{stuck.pk} done: 5 matched" in capsys.readouterr().out


def test_the_admin_resumes_a_failed_run_from_its_page(
    mqls, welcome, runner, client, settings, monkeypatch, django_capture_on_commit_callbacks
):
    workflow = make_workflow(
        actions=[{"type": "set_marketing"}, {"type": "send_marketing_email", "email": welcome.pk}]
    )
    settings.JOB_LEASE_SECONDS = 0
    stuck = killed_before_the_first_chunks_email(workflow, monkeypatch)
    settings.JOB_LEASE_SECONDS = 300
    client.force_login(runner)
    page_url = f"/admin/workflows/workflowrun/{stuck.pk}/change/"

    page = client.get(page_url).content.decode()
    assert "The worker running this workflow run stopped" in page
    assert 'id="run-resume"' in page

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/admin/workflows/workflowrun/{stuck.pk}/resume/")
    assert response.status_code == 302
    done = WorkflowRun.objects.get(pk=stuck.pk)
    assert (done.status, done.enrolled, len(mail.outbox)) == ("done", 5, 5)
    assert 'id="run-resume"' not in client.get(page_url).content.decode()
