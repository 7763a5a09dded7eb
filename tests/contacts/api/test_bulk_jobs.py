"""The contacts API's status change by filter over many contacts: a background job answered
with 202 and polled; one answer shape, with its `preview` flag, for the synchronous path."""

import pytest

from contacts.models import Contact
from contacts.status.models import BulkStatusJob, StatusChange, StatusChangeRequest
from tests.contacts.api.support import BULK, M, N, client_for, contact_snapshot
from tests.factories import ContactFactory, UserFactory, set_guardrails


def job_url(pk) -> str:
    return f"{BULK}jobs/{pk}/"


@pytest.fixture
def threshold_two(settings):
    settings.BULK_STATUS_JOB_THRESHOLD = 2


@pytest.fixture
def leads(account):
    ContactFactory(lifecycle_stage="customer")
    return ContactFactory.create_batch(3, lifecycle_stage="lead")


BODY = {"status": M, "filter": {"lifecycle_stage": "lead"}, "idempotency_key": "sweep"}


def test_above_the_threshold_a_change_by_filter_is_a_job_to_poll(
    ops, leads, threshold_two, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = ops.post(BULK, BODY, format="json")

    assert response.status_code == 202, response.data
    job = BulkStatusJob.objects.get()
    assert response.data["id"] == job.pk
    assert response.data["url"] == f"http://testserver{job_url(job.pk)}"
    assert response["Location"] == response.data["url"]
    assert (response.data["status"], response.data["total"]) == ("queued", 3)
    assert response.data["idempotency_key"] == "sweep"
    assert response.data["criteria"] == {"filter": {"lifecycle_stage": "lead"}}

    polled = ops.get(job_url(job.pk))

    assert polled.status_code == 200
    assert {k: polled.data[k] for k in ("status", "total", "done", "changed", "held")} == {
        "status": "done",
        "total": 3,
        "done": 3,
        "changed": 3,
        "held": 0,
    }
    assert set(Contact.objects.filter(marketing_status=M).values_list("pk", flat=True)) == {
        c.pk for c in leads
    }


def test_a_retry_with_the_same_key_returns_the_same_job(
    ops, leads, threshold_two, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = ops.post(BULK, BODY, format="json")
    ledger = StatusChange.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        retry = ops.post(
            BULK,
            {k: v for k, v in BODY.items() if k != "idempotency_key"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="sweep",
        )

    assert first.status_code == retry.status_code == 202
    assert retry.data["id"] == first.data["id"]
    assert retry["Idempotent-Replayed"] == "true"
    assert BulkStatusJob.objects.count() == 1
    assert StatusChange.objects.count() == ledger


def test_the_same_key_with_another_filter_is_a_conflict(ops, leads, threshold_two):
    ops.post(BULK, BODY, format="json")

    response = ops.post(BULK, {**BODY, "filter": {"lifecycle_stage": "customer"}}, format="json")

    assert response.status_code == 409
    assert BulkStatusJob.objects.count() == 1


def test_at_or_below_the_threshold_it_runs_at_once(ops, leads, settings):
    settings.BULK_STATUS_JOB_THRESHOLD = 3

    response = ops.post(BULK, BODY, format="json")

    assert response.status_code == 200
    assert (response.data["preview"], response.data["changed"]) == (False, 3)
    assert not BulkStatusJob.objects.exists()


def test_a_preview_and_a_change_answer_with_the_same_keys(ops, leads):
    preview = ops.post(BULK, {**BODY, "preview": True}, format="json")
    before = (contact_snapshot(), StatusChangeRequest.objects.count())
    change = ops.post(BULK, BODY, format="json")

    assert preview.status_code == change.status_code == 200
    assert list(preview.data) == list(change.data)
    assert (preview.data["preview"], change.data["preview"]) == (True, False)
    assert preview.data["changed"] == change.data["changed"] == 3
    assert preview.data["live_count"] == change.data["live_count"] == 3
    assert before[1] == 0  # the preview wrote nothing


def test_a_job_past_the_hard_cap_is_held_with_its_approval(
    ops, leads, threshold_two, django_capture_on_commit_callbacks
):
    set_guardrails(hard_cap=2)
    with django_capture_on_commit_callbacks(execute=True):
        job_id = ops.post(BULK, BODY, format="json").data["id"]

    polled = ops.get(job_url(job_id))

    assert (polled.data["status"], polled.data["held"], polled.data["done"]) == ("held", 3, 0)
    assert polled.data["approval"] is not None
    assert "past the hard cap of 2" in polled.data["message"]
    assert Contact.objects.filter(marketing_status=N).count() == 4


def test_a_job_needs_the_view_permission_and_unknown_ids_are_404(ops, leads, threshold_two):
    job_id = ops.post(BULK, BODY, format="json").data["id"]
    sales = client_for(UserFactory(username="seller", groups=["Sales"]))

    assert sales.get(job_url(job_id)).status_code == 403
    assert ops.get(job_url(424242)).status_code == 404


def test_starting_a_job_needs_the_status_permission(sales_client, leads, threshold_two):
    response = sales_client.post(BULK, BODY, format="json")

    assert response.status_code == 403
    assert not BulkStatusJob.objects.exists()
