"""The preview's staged rows, kept for the run (PostgreSQL).

A preview reads the whole file as a run does: it normalises and checks every row, writes
the row errors and stages one row per email. On PostgreSQL it stages them into a table of
its own, `import_preview_<id>_<token>`, UNLOGGED (no WAL: the file can always be read
again), and keeps it; the import names it (`staged_table`). The run that follows reads
those rows instead of reading the file a second time, which is a fifth of a
1,000,000-row import's run (docs/BENCHMARKS.md, section g). Each preview stages into a
new name, so two previews of one import never write the same table.

The run trusts the table only when it holds exactly the rows the preview counted
(PostgreSQL empties an unlogged table after a crash); otherwise it reads the file, as it
always does where nothing is kept (SQLite, a table dropped, a resume after a failure).
The table goes when the run ends, when the mapping changes, when the import is discarded,
and, for a preview nobody commits, after IMPORT_PREVIEW_KEEP_HOURS (the hourly sweep).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
from contextlib import contextmanager

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Q
from django.utils import timezone

from contacts.imports.models import ContactImport, ImportStatus
from contacts.imports.staging import _fast_path, _Staged, stage_view

logger = logging.getLogger(__name__)

_PREFIX = "import_preview_"
_NAME = re.compile(rf"{_PREFIX}(\d+)_[0-9a-f]+")


def kept_table_new(contact_import: ContactImport) -> str:
    """A fresh name for this preview's table, recorded on the import before it is written
    (so the sweep never takes it for an orphan), the previous preview's table dropped.
    "" where nothing is kept (SQLite)."""
    if not _fast_path():
        return ""
    kept_drop(contact_import.staged_table)
    name = f"{_PREFIX}{int(contact_import.pk)}_{secrets.token_hex(4)}"
    ContactImport.objects.filter(pk=contact_import.pk).update(
        staged_table=name, updated_at=timezone.now()
    )
    contact_import.staged_table = name
    return name


def kept_drop(name: str) -> None:
    """Drop a kept table by its name ("" or an unknown name: nothing). CASCADE: a session
    still reading it (a preview of the same import, submitted twice) has a temporary view
    of it, which would otherwise refuse the drop; that session's next read fails instead."""
    if name and _NAME.fullmatch(name) and connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TABLE IF EXISTS {name} CASCADE")


def kept_forget(contact_import: ContactImport) -> None:
    """The import's kept rows no longer match it (the mapping changed, it is discarded)."""
    kept_drop(contact_import.staged_table)
    if contact_import.staged_table:
        ContactImport.objects.filter(pk=contact_import.pk).update(staged_table="")
        contact_import.staged_table = ""


@contextmanager
def kept_dropped_on_error(contact_import: ContactImport):
    """The preview's table goes if the preview fails. A database error leaves it: the
    transaction's rollback takes it with the rest, or else the sweep does."""
    try:
        yield
    except DatabaseError:
        raise
    except BaseException:
        kept_forget(contact_import)
        raise


def kept_open(contact_import: ContactImport) -> _Staged | None:
    """The preview's staged rows as this session's staging table (a view of the kept
    table), with the preview's counts; None when the file must be read again."""
    name = contact_import.staged_table
    if not name or not _fast_path():
        return None
    staged = _Staged(
        rows=contact_import.rows,
        invalid=contact_import.invalid_count,
        duplicates=contact_import.duplicate_count,
    )
    staged.kept = staged.rows - staged.invalid - staged.duplicates
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s)", [name])
        if cursor.fetchone()[0] is None:
            return None
        cursor.execute(f"SELECT COUNT(*) FROM {name}")
        if cursor.fetchone()[0] != staged.kept:
            logger.warning("import %s: its kept rows are incomplete; reading the file again", name)
            kept_drop(name)
            return None
        stage_view(cursor, name)
    return staged


def kept_sweep(now: dt.datetime | None = None) -> list[str]:
    """Drop the kept tables no import waits on: those of imports gone, run, failed or
    previewed again, and those of previews left uncommitted IMPORT_PREVIEW_KEEP_HOURS.
    Returns the names dropped."""
    if connection.vendor != "postgresql":
        return []
    now = now or timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname LIKE %s",
            [_PREFIX.replace("_", r"\_") + "%"],
        )
        names = [row[0] for row in cursor.fetchall() if _NAME.fullmatch(row[0])]
    waited_on = set(
        ContactImport.objects.filter(staged_table__in=names)
        .filter(
            Q(status__in=[ImportStatus.QUEUED, ImportStatus.RUNNING])
            | Q(updated_at__gte=now - dt.timedelta(hours=settings.IMPORT_PREVIEW_KEEP_HOURS))
        )
        .values_list("staged_table", flat=True)
    )
    dropped = [name for name in names if name not in waited_on]
    for name in dropped:
        kept_drop(name)
    ContactImport.objects.filter(staged_table__in=dropped).update(staged_table="")
    return dropped
