"""An import whose upsert the workers share (PostgreSQL): the job stages the file, copies the
rows into a table every session reads and queues a task per chunk; any worker saves any
chunk, once; the last chunk queues the end, which runs once. The import ends as an import
in one process ends — the same contacts, counts, row errors, ledger rows and requests.

The queue is stood in for by a list (`queue`): a test delivers the queued tasks when and how
often it likes, as workers would. tests/faults/ runs them on real workers.
"""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contacts.imports import services, shared
from contacts.imports.models import ContactImport, ImportChunk, ImportStatus
from contacts.imports.services import contact_import_resume, contact_import_run
from contacts.tasks import finish_import, upsert_import_chunk
from tests.contacts.imports.test_import_resume import (  # noqa: F401 (fixtures)
    committed,
    end_state,
    existing,
    media,
    small_chunks,
    uninterrupted_end_state,
)

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


@pytest.fixture
def queue(settings, monkeypatch) -> list[tuple]:
    """Imports are shared; their tasks are kept here, as (task name, args), not run."""
    settings.IMPORTS_SHARED = True
    queued: list[tuple] = []
    for task in (upsert_import_chunk, finish_import):
        monkeypatch.setattr(
            task, "delay", lambda *args, name=task.name: queued.append((name, args))
        )
    return queued


def deliver(item: tuple) -> str:
    name, args = item
    if name == upsert_import_chunk.name:
        contact_import_id, number, token = args
        return shared.import_chunk_run(
            contact_import_id=contact_import_id, number=number, token=token
        )
    contact_import_id, token = args
    return shared.import_finish(contact_import_id=contact_import_id, token=token)


def chunk_tasks(queue: list[tuple]) -> list[tuple]:
    return [item for item in queue if item[0] == upsert_import_chunk.name]


def finish_tasks(queue: list[tuple]) -> list[tuple]:
    return [item for item in queue if item[0] == finish_import.name]


def shared_table_exists(contact_import_id: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [shared.shared_table(contact_import_id)])
        return cursor.fetchone()[0] is not None


def uninterrupted_in_one_process(settings) -> dict:
    settings.IMPORTS_SHARED = False
    expected = uninterrupted_end_state()
    settings.IMPORTS_SHARED = True
    return expected


@pytest.mark.usefixtures("existing", "small_chunks")
def test_the_workers_save_the_chunks_in_any_order_and_the_last_one_ends_the_import(queue, settings):
    expected = uninterrupted_in_one_process(settings)

    running = contact_import_run(contact_import_id=committed().pk)

    # The job stages the file, shares its 11 rows as six chunks of 2, and returns
    assert running.status == ImportStatus.RUNNING
    chunks = list(ImportChunk.objects.filter(contact_import=running).values_list("number", "rows"))
    assert chunks == [(1, 2), (2, 2), (3, 2), (4, 2), (5, 2), (6, 1)]
    assert [item[1][1] for item in chunk_tasks(queue)] == [1, 2, 3, 4, 5, 6]
    assert {item[1][2] for item in queue} == {ContactImport.objects.get(pk=running.pk).lease_token}
    assert shared_table_exists(running.pk)

    # When the workers save the chunks, last first, the last one queues the end, once
    assert [deliver(item) for item in reversed(chunk_tasks(queue))] == ["done"] * 6
    assert len(finish_tasks(queue)) == 1
    assert ContactImport.objects.get(pk=running.pk).processed_rows == 11
    assert deliver(finish_tasks(queue)[0]) == "done"

    # Then the import ends as it does in one process, and its shared table is gone
    assert end_state(running.pk) == expected
    assert not shared_table_exists(running.pk)
    # and the tasks delivered again do nothing
    assert deliver(chunk_tasks(queue)[0]) == "done already"
    assert deliver(finish_tasks(queue)[0]) == "not mine"
    assert end_state(running.pk) == expected


@pytest.mark.usefixtures("existing", "small_chunks")
def test_a_chunk_that_fails_fails_the_import_and_a_resume_saves_only_what_is_left(
    queue, settings, monkeypatch
):
    expected = uninterrupted_in_one_process(settings)
    running = contact_import_run(contact_import_id=committed().pk)
    first, second, *rest = chunk_tasks(queue)
    assert deliver(first) == "done"

    # Given the second chunk stops on an error
    tally = services.upsert_tally
    monkeypatch.setattr(services, "upsert_tally", lambda rows: 1 / 0)
    assert deliver(second) == "failed"
    monkeypatch.setattr(services, "upsert_tally", tally)
    failed = ContactImport.objects.get(pk=running.pk)
    assert (failed.status, failed.message) == (
        ImportStatus.FAILED,
        "The import stopped on an internal error (ZeroDivisionError).",
    )
    # the chunks still queued under its lease do nothing
    assert [deliver(item) for item in rest] == ["lease lost"] * 4

    # When it is resumed, the file is staged again and only the five chunks left are queued
    queue.clear()
    contact_import_resume(contact_import=failed, enqueue=False)
    contact_import_run(contact_import_id=running.pk)
    assert [item[1][1] for item in chunk_tasks(queue)] == [2, 3, 4, 5, 6]

    # and once they and the end have run, the import ends as an uninterrupted one
    assert [deliver(item) for item in chunk_tasks(queue)] == ["done"] * 5
    assert deliver(finish_tasks(queue)[0]) == "done"
    assert end_state(running.pk) == expected


@pytest.mark.usefixtures("existing")
def test_an_import_that_fits_one_chunk_runs_in_one_process(queue):
    contact_import = contact_import_run(contact_import_id=committed().pk)

    assert contact_import.status == ImportStatus.DONE
    assert queue == []
    assert not ImportChunk.objects.exists()


@pytest.mark.usefixtures("existing", "small_chunks")
def test_a_failed_shared_import_discarded_leaves_no_table_behind(queue, monkeypatch):
    running = contact_import_run(contact_import_id=committed().pk)
    monkeypatch.setattr(services, "upsert_tally", lambda rows: 1 / 0)
    assert deliver(chunk_tasks(queue)[0]) == "failed"
    assert shared_table_exists(running.pk)

    services.contact_import_discard(contact_import=ContactImport.objects.get(pk=running.pk))

    assert not shared_table_exists(running.pk)
    assert not ImportChunk.objects.exists()


def test_a_hubspot_export_shared_by_the_workers_keeps_the_statuses_as_in_one_process(
    account, marketing_ops, settings, monkeypatch
):
    from django.db import transaction

    from contacts.imports.models import HubSpotRecord
    from tests.contacts.imports.test_hubspot_import import EXPORT, bring, statuses
    from tests.contacts.imports.test_import_resume import WorkerKilled

    def outcome(contact_import) -> tuple:
        return (
            contact_import.status,
            contact_import.created_count,
            contact_import.updated_count,
            contact_import.invalid_count,
            contact_import.marketing_count,
            statuses(),
            sorted(HubSpotRecord.objects.values_list("record_id", "contact__email")),
        )

    with pytest.raises(WorkerKilled), transaction.atomic():
        alone = outcome(bring(EXPORT, actor=marketing_ops))
        raise WorkerKilled  # roll it back
    # Shared, in chunks of one row; without a broker the tasks run here, one after another
    settings.IMPORTS_SHARED = True
    monkeypatch.setattr(services, "IMPORT_UPSERT_BATCH", 1)

    contact_import = bring(EXPORT, actor=marketing_ops)

    assert ImportChunk.objects.filter(contact_import=contact_import).count() > 1
    assert outcome(contact_import) == alone


@pytest.mark.usefixtures("existing", "small_chunks")
def test_a_queue_that_does_not_answer_fails_the_import_with_a_sentence(settings, monkeypatch):
    from crm.jobs import JobNotQueued

    settings.IMPORTS_SHARED = True

    def unreachable(*args):
        raise JobNotQueued("A part of the import could not be queued: the broker is down.")

    monkeypatch.setattr(shared.jobs, "delay", lambda task, *args, **kwargs: unreachable())

    failed = contact_import_run(contact_import_id=committed().pk)

    assert failed.status == ImportStatus.FAILED
    assert failed.message == "A part of the import could not be queued: the broker is down."


@pytest.mark.usefixtures("existing", "small_chunks")
def test_a_shared_import_resumed_by_the_command_ends_in_its_process_with_the_same_counts(
    queue, settings, monkeypatch, capsys
):
    from django.core.management import call_command

    expected = uninterrupted_in_one_process(settings)
    running = contact_import_run(contact_import_id=committed().pk)
    # Given a shared import whose second chunk failed, one chunk saved
    assert deliver(chunk_tasks(queue)[0]) == "done"
    tally = services.upsert_tally
    monkeypatch.setattr(services, "upsert_tally", lambda rows: 1 / 0)
    assert deliver(chunk_tasks(queue)[1]) == "failed"
    monkeypatch.setattr(services, "upsert_tally", tally)

    # When the command resumes it in its own process
    call_command("import_contacts", "--resume", str(running.pk))

    # Then it ends as an uninterrupted import, the saved chunk counted once

    assert end_state(running.pk) == expected
    assert not shared_table_exists(running.pk)


@pytest.mark.usefixtures("existing", "small_chunks")
def test_the_previews_kept_rows_become_the_shared_table_without_a_copy(queue, settings):
    expected = uninterrupted_in_one_process(settings)
    contact_import = committed()
    kept = contact_import.staged_table

    with CaptureQueriesContext(connection) as queries:
        running = contact_import_run(contact_import_id=contact_import.pk)

    assert not any("AS TABLE" in query["sql"] for query in queries.captured_queries)
    assert shared_table_exists(running.pk)
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [kept])
        assert cursor.fetchone()[0] is None  # renamed, not left behind
    assert [deliver(item) for item in chunk_tasks(queue)] == ["done"] * 6
    assert [deliver(item) for item in finish_tasks(queue)] == ["done"]
    assert end_state(running.pk) == expected
    assert not shared_table_exists(running.pk)
