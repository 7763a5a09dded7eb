"""An import whose worker dies: its lease runs out, it is marked failed when read (or by the
beat), and a resume ends as an uninterrupted run would. A worker that lost its lease stops;
a live lease keeps a redelivered task from running the import twice.

A worker killed with -9 is simulated here by an exception no handler catches
(`WorkerKilled`, a BaseException) raised between two chunks; tests/faults/ kills a real one.
"""

from collections import Counter

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from contacts.imports import services, staging
from contacts.imports.models import ContactImport, ImportStatus
from contacts.imports.services import (
    contact_import_commit,
    contact_import_create,
    contact_import_preview,
    contact_import_run,
)
from contacts.models import Contact
from contacts.status.models import StatusChange, StatusChangeRequest
from contacts.status.services import contacts_set_marketing
from crm.tasks import expire_stale_jobs
from tests.factories import ContactFactory

IMPORTS = "/api/imports/"
FILE = (
    "Email,First Name,Company\n"
    + "".join(f"p{i}@example.com,P{i},Co\n" for i in range(9))
    + "old1@example.com,Renamed,Co\n"  # an existing contact, updated
    + "old2@example.com,,\n"  # an existing contact, unchanged
    + "not-an-email,X,Co\n"  # a row error
    + "p3@example.com,P3 again,Co\n"  # a duplicate: this last row wins
)


class WorkerKilled(BaseException):
    """Stands for kill -9: no `except Exception` sees it, nothing records it."""


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 2 rows on both paths: the file's 11 kept rows take 6 chunks."""
    monkeypatch.setattr(services, "IMPORT_UPSERT_BATCH", 2)
    monkeypatch.setattr(services, "IMPORT_PORTABLE_BATCH", 2)
    monkeypatch.setattr(staging, "IMPORT_STAGE_BATCH", 4)


@pytest.fixture
def existing(account, manual):
    ContactFactory(email="old1@example.com", first_name="Old")
    old2 = ContactFactory(email="old2@example.com")
    contacts_set_marketing(contacts=old2, source=manual)  # already marketing: no change


def committed(text: str = FILE, *, marketing: bool = True) -> ContactImport:
    contact_import = contact_import_create(
        file=SimpleUploadedFile("people.csv", text.encode(), "text/csv"),
        file_name="people.csv",
        marketing=marketing,
    )
    contact_import_preview(contact_import=contact_import)
    return contact_import_commit(contact_import=contact_import, enqueue=False)


def end_state(contact_import_id: int) -> dict:
    """What an import leaves: its counts, the contacts, the ledger and the usage."""
    contact_import = ContactImport.objects.get(pk=contact_import_id)
    return {
        "import": (
            contact_import.status,
            contact_import.rows,
            contact_import.created_count,
            contact_import.updated_count,
            contact_import.unchanged_count,
            contact_import.invalid_count,
            contact_import.duplicate_count,
            contact_import.marketing_count,
        ),
        "contacts": sorted(
            Contact.objects.values_list("email", "first_name", "company", "marketing_status")
        ),
        "ledger": Counter(StatusChange.objects.values_list("contact__email", "action", "delta")),
        "requests": StatusChangeRequest.objects.count(),
        "row_errors": contact_import.row_errors.count(),
    }


def uninterrupted_end_state() -> dict:
    """The end state of the same import run once without interruption, then rolled back."""
    state = {}
    with pytest.raises(WorkerKilled), transaction.atomic():
        state.update(end_state(contact_import_run(contact_import_id=committed().pk).pk))
        raise WorkerKilled  # roll it all back
    return state


def killed_while_saving(contact_import: ContactImport, monkeypatch, *, after_chunks: int):
    """Run the import; the worker dies when `after_chunks` chunks of contacts are saved."""
    report = services.jobs.Lease.beat
    saved = []

    def beat(lease, **fields):
        if fields.get("phase") == "saving" and fields["processed_rows"]:
            saved.append(fields["processed_rows"])
            if len(saved) == after_chunks:
                raise WorkerKilled
        return report(lease, **fields)

    monkeypatch.setattr(services.jobs.Lease, "beat", beat)
    with pytest.raises(WorkerKilled):
        contact_import_run(contact_import_id=contact_import.pk)
    monkeypatch.setattr(services.jobs.Lease, "beat", report)


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.parametrize("portable", [False, True], ids=["fast", "portable"])
def test_a_killed_import_is_failed_when_read_and_its_resume_ends_as_an_uninterrupted_run(
    existing,
    small_chunks,
    marketing_ops,
    settings,
    monkeypatch,
    django_capture_on_commit_callbacks,
    portable,
):
    monkeypatch.setattr(staging, "FORCE_PORTABLE", portable)
    expected = uninterrupted_end_state()
    contact_import = committed()

    # Given the worker dies with 2 of the 6 chunks saved, and its lease then runs out
    settings.JOB_LEASE_SECONDS = 0
    killed_while_saving(contact_import, monkeypatch, after_chunks=2)
    stuck = ContactImport.objects.get(pk=contact_import.pk)
    assert (stuck.status, stuck.phase) == ("running", "saving")
    assert 0 < Contact.objects.filter(email__startswith="p").count() < 9
    settings.JOB_LEASE_SECONDS = 300

    # When its API is read, it says the worker stopped
    client = client_for(marketing_ops)
    failed = client.get(f"{IMPORTS}{contact_import.pk}/").json()
    assert failed["status"] == "failed"
    assert failed["message"].startswith("The worker running this import stopped")
    assert "Resume it to finish" in failed["message"]

    # and once resumed it ends exactly as the uninterrupted run of the same file
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{IMPORTS}{contact_import.pk}/resume/")
    assert response.status_code == 202, response.content
    assert end_state(contact_import.pk) == expected
    assert expected["import"] == ("done", 13, 9, 1, 1, 1, 1, 10)
    call_command("verify_billing", periods=0)  # counters = recount = ledger replay


def test_the_beat_task_fails_the_imports_whose_worker_died(existing, small_chunks, settings):
    settings.JOB_LEASE_SECONDS = 0
    contact_import = committed()
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ImportStatus.RUNNING, lease_token="gone", lease_expires_at=timezone.now()
    )

    assert expire_stale_jobs() == {"failed": 1}

    contact_import.refresh_from_db()
    assert contact_import.status == "failed"
    assert "stopped: its lease ran out at" in contact_import.message
    assert expire_stale_jobs() == {"failed": 0}


def test_a_live_lease_keeps_a_running_import_running_and_unrun_by_a_second_worker(
    existing, small_chunks, marketing_ops
):
    # Given a worker holds the import's lease
    contact_import = committed()
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ImportStatus.RUNNING,
        lease_token="alive",
        lease_expires_at=timezone.now() + timezone.timedelta(minutes=5),
    )
    before = Contact.objects.count()

    # When its task is delivered again, and its API read
    again = contact_import_run(contact_import_id=contact_import.pk)
    read = client_for(marketing_ops).get(f"{IMPORTS}{contact_import.pk}/").json()
    resumed = client_for(marketing_ops).post(f"{IMPORTS}{contact_import.pk}/resume/")

    # Then nothing runs twice, nothing is failed, and a resume is refused with the reason
    assert (again.status, read["status"]) == ("running", "running")
    assert Contact.objects.count() == before
    assert resumed.status_code == 400
    assert "This import is running" in resumed.json()["detail"]


def test_a_worker_that_lost_its_lease_stops_saving(existing, small_chunks, monkeypatch):
    contact_import = committed()
    report = services.jobs.Lease.beat

    def taken_over_after_the_first_chunk(lease, **fields):
        if fields.get("phase") == "saving" and fields["processed_rows"]:
            # meanwhile it was taken for dead and resumed by another worker
            ContactImport.objects.filter(pk=lease.pk).update(lease_token="another worker")
        return report(lease, **fields)

    monkeypatch.setattr(services.jobs.Lease, "beat", taken_over_after_the_first_chunk)
    stopped = contact_import_run(contact_import_id=contact_import.pk)

    assert (stopped.status, stopped.upsert_after) == ("running", "old2@example.com")
    assert stopped.created_count == 0  # old1 updated, old2 unchanged: the first chunk only
    assert not Contact.objects.filter(email__startswith="p").exists()


def test_a_finished_import_is_not_resumed(existing, marketing_ops):
    contact_import = contact_import_run(contact_import_id=committed().pk)

    response = client_for(marketing_ops).post(f"{IMPORTS}{contact_import.pk}/resume/")

    assert response.status_code == 400
    assert response.json() == {"detail": "This import has finished; there is nothing to resume."}


def test_the_command_resumes_a_failed_import(existing, small_chunks, settings, monkeypatch, capsys):
    contact_import = committed()
    settings.JOB_LEASE_SECONDS = 0
    killed_while_saving(contact_import, monkeypatch, after_chunks=1)
    settings.JOB_LEASE_SECONDS = 300

    call_command("import_contacts", "--resume", str(contact_import.pk))

    contact_import.refresh_from_db()
    assert (contact_import.status, contact_import.created_count) == ("done", 9)
    assert f"Resuming import #{contact_import.pk}" in capsys.readouterr().out
    assert Contact.objects.count() == 11


def test_the_admin_shows_a_dead_import_failed_with_a_resume_button_that_finishes_it(
    existing, small_chunks, settings, monkeypatch, ops_client, django_capture_on_commit_callbacks
):
    contact_import = committed()
    settings.JOB_LEASE_SECONDS = 0
    killed_while_saving(contact_import, monkeypatch, after_chunks=1)
    settings.JOB_LEASE_SECONDS = 300
    page_url = f"/admin/contacts/contactimport/{contact_import.pk}/change/"

    page = ops_client.get(page_url).content.decode()
    assert "The worker running this import stopped" in page
    assert 'id="import-resume"' in page

    with django_capture_on_commit_callbacks(execute=True):
        response = ops_client.post(f"/admin/contacts/contactimport/{contact_import.pk}/resume/")
    assert response.status_code == 302
    contact_import.refresh_from_db()
    assert (contact_import.status, contact_import.created_count) == ("done", 9)
    assert 'id="import-resume"' not in ops_client.get(page_url).content.decode()
