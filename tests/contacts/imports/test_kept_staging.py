"""On PostgreSQL a preview keeps the rows it staged, and the run reads them instead of the
file; it reads the file again when they are gone or incomplete. The kept rows go with the
run, a new mapping, a new preview, a discard, or the sweep of previews nobody committed.
"""

import datetime as dt

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from contacts.imports import kept, staging
from contacts.imports.models import ContactImport, ImportStatus
from contacts.imports.services import (
    contact_import_commit,
    contact_import_configure,
    contact_import_create,
    contact_import_discard,
    contact_import_preview,
    contact_import_run,
)
from contacts.tasks import drop_stale_import_previews
from tests.contacts.imports.test_imports import contacts_table, errors_of, upload
from tests.factories import ContactFactory

FILE = (
    "Email,First Name,Company\n"
    "ann@example.com,Ann,Acme\n"
    "not-an-email,Bad,Acme\n"  # a row error
    "bob@example.com,Bob,Beta\n"
    "old@example.com,Renamed,\n"  # an existing contact, updated
    "ann@example.com,Annie,Acme\n"  # a duplicate: this last row wins
)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def previewed(text: str = FILE) -> ContactImport:
    contact_import = contact_import_create(file=upload(text), file_name="people.csv")
    return contact_import_preview(contact_import=contact_import)


def table_exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [name])
        return cursor.fetchone()[0] is not None


def finished(contact_import: ContactImport) -> tuple:
    contact_import_commit(contact_import=contact_import, enqueue=False)
    done = contact_import_run(contact_import_id=contact_import.pk)
    return (
        done.status,
        done.rows,
        done.created_count,
        done.updated_count,
        done.invalid_count,
        done.duplicate_count,
    )


def the_file_is_not_read(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the run read the file")

    monkeypatch.setattr(staging, "_read_batches", refuse)


@pytest.fixture
def old_contact(account):
    ContactFactory(email="old@example.com", first_name="Old", company="Gamma")


EXPECTED = ("done", 5, 2, 1, 1, 1)  # 5 rows: 2 new, 1 updated, 1 invalid, 1 duplicate
EXPECTED_CONTACTS = [
    ("ann@example.com", "Annie", "Acme"),
    ("bob@example.com", "Bob", "Beta"),
    ("old@example.com", "Renamed", "Gamma"),
]


def contacts() -> list[tuple]:
    return [row[:2] + row[3:4] for row in contacts_table()]


@pytest.mark.django_db
def test_only_postgresql_keeps_a_previews_rows_and_the_import_ends_the_same(old_contact):
    contact_import = previewed()

    if connection.vendor == "postgresql":
        assert contact_import.staged_table.startswith(f"import_preview_{contact_import.pk}_")
        assert table_exists(contact_import.staged_table)
    else:
        assert contact_import.staged_table == ""
    assert finished(contact_import) == EXPECTED
    assert contacts() == EXPECTED_CONTACTS


@pytest.mark.django_db
@pytest.mark.postgres
def test_the_run_reads_the_rows_its_preview_staged_and_drops_them(old_contact, monkeypatch):
    contact_import = previewed()
    errors = errors_of(contact_import)
    name = contact_import.staged_table
    the_file_is_not_read(monkeypatch)

    assert finished(contact_import) == EXPECTED
    assert contacts() == EXPECTED_CONTACTS
    # The preview's row errors stand: the bad email and the earlier duplicate
    assert [line for line, _, _ in errors_of(contact_import)] == [2, 3]
    assert errors_of(contact_import) == errors
    assert not table_exists(name)


@pytest.mark.django_db
@pytest.mark.postgres
def test_kept_rows_emptied_by_a_crash_are_not_trusted_the_file_is_read(old_contact):
    contact_import = previewed()
    with connection.cursor() as cursor:  # what PostgreSQL does to an unlogged table
        cursor.execute(f"TRUNCATE {contact_import.staged_table}")

    assert finished(contact_import) == EXPECTED
    assert contacts() == EXPECTED_CONTACTS
    assert [line for line, _, _ in errors_of(contact_import)] == [2, 3]


@pytest.mark.django_db
@pytest.mark.postgres
def test_a_new_preview_a_new_mapping_and_a_discard_drop_the_kept_rows(account):
    first = previewed()
    first_table = first.staged_table

    again = contact_import_preview(contact_import=first)
    assert again.staged_table != first_table
    assert table_exists(again.staged_table) and not table_exists(first_table)

    second_table = again.staged_table
    configured = contact_import_configure(
        contact_import=again, mapping={"Company": ""}, marketing=False
    )
    assert not table_exists(second_table)
    assert ContactImport.objects.get(pk=configured.pk).staged_table == ""

    third = contact_import_preview(contact_import=configured)
    third_table = third.staged_table
    assert table_exists(third_table)
    contact_import_discard(contact_import=third)
    assert not table_exists(third_table)


@pytest.mark.django_db
@pytest.mark.postgres
def test_the_sweep_drops_the_rows_no_import_waits_on(account, settings):
    settings.IMPORT_PREVIEW_KEEP_HOURS = 24
    now = timezone.now()
    fresh = previewed()
    left = previewed()
    queued = previewed()
    contact_import_commit(contact_import=queued, enqueue=False)
    day_ago = now - dt.timedelta(hours=25)
    ContactImport.objects.filter(pk__in=[left.pk, queued.pk]).update(updated_at=day_ago)
    gone = previewed()
    ContactImport.objects.filter(pk=gone.pk).delete()

    assert drop_stale_import_previews.delay().get() == {"dropped": 2}

    assert table_exists(fresh.staged_table)  # previewed within the day
    assert table_exists(queued.staged_table)  # waits for its run
    assert not table_exists(left.staged_table)  # previewed a day ago, never committed
    assert not table_exists(gone.staged_table)  # its import is gone
    assert ContactImport.objects.get(pk=left.pk).staged_table == ""
    assert ContactImport.objects.get(pk=queued.pk).status == ImportStatus.QUEUED
    assert kept.kept_sweep() == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_a_second_preview_replaces_the_rows_another_session_still_reads(account):
    first = previewed()
    settings_dict = connection.settings_dict
    other = psycopg.connect(
        dbname=settings_dict["NAME"],
        user=settings_dict["USER"],
        host=settings_dict["HOST"],
        port=settings_dict["PORT"],
        autocommit=True,
    )
    try:
        # A preview of the same import, submitted twice, still reads the first table
        other.execute(f"CREATE TEMPORARY VIEW import_stage AS SELECT * FROM {first.staged_table}")

        second = contact_import_preview(contact_import=ContactImport.objects.get(pk=first.pk))

        assert second.staged_table != first.staged_table
        assert table_exists(second.staged_table) and not table_exists(first.staged_table)
        with pytest.raises(psycopg.errors.UndefinedTable):
            other.execute("SELECT COUNT(*) FROM import_stage")
    finally:
        other.close()
        kept.kept_drop(ContactImport.objects.get(pk=first.pk).staged_table)
