"""An import's upsert shared by the workers (PostgreSQL, with a broker: `IMPORTS_SHARED`).

The job that runs an import (`contact_import_run`, the coordinator) reads its preview's
kept rows, or the file into its session's staging table. When the rows fill more than one
upsert chunk, it then makes them a table every session can read — `import_stage_<id>`,
UNLOGGED (no WAL: it is rebuilt from the file whenever it is needed again): the preview's
kept table renamed, or a copy of the staging table — records the chunks' email
bounds as `ImportChunk` rows and queues one task per chunk (`contacts.upsert_import_chunk`),
carrying the import's lease token, and returns. The import stays one leased job.

- A chunk, on whichever worker took it, renews the import's lease and runs the upsert
  statement over its email range of the shared table, in one transaction with the
  import's counts (`F()`) and its own row marked done (`UPDATE … WHERE done_at IS NULL`):
  a chunk delivered twice finds its row marked and rolls back, so no row is counted twice
  (and the upsert writes nothing for rows that already match anyway).
- The chunk that finds every chunk done queues the finish (`contacts.finish_import`), which
  claims the import's "saving" phase once (a conditional UPDATE) and does what an import
  in one process does after its upsert — the HubSpot records, the counts, the marketing
  part under the usage lock, the notices — reading the shared table through a temporary
  view named like the staging table, then drops the shared table.
- A chunk whose lease is gone does nothing (the import failed, or was resumed under a new
  lease). A resume stages the file again, rebuilds the shared table (PostgreSQL empties
  unlogged tables after a crash: it is never trusted across attempts) and queues the
  chunks not yet done.

The lock order is crm/locks.py's: a chunk writes contacts, then the import's row, then its
own chunk row; the finish's status change takes the usage lock first, as always.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from contacts.imports import services
from contacts.imports.models import ContactImport, ImportChunk
from contacts.imports.staging import STAGE_TABLE, _Staged, stage_view
from crm import jobs

logger = logging.getLogger(__name__)


class _ChunkDoneAlready(Exception):
    """Another delivery of this chunk's task saved it first: roll back."""


def shared_table(contact_import_id: int) -> str:
    return f"import_stage_{int(contact_import_id)}"


def drop_shared_table(contact_import_id: int) -> None:
    """CASCADE: the coordinator's view of the table, when it was its preview's kept rows,
    may not be dropped yet (see `import_share`)."""
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {shared_table(contact_import_id)} CASCADE")


def import_shares(contact_import: ContactImport) -> bool:
    """Whether this run of the import shares its upsert: the setting is on, and no chunk was
    saved the one-process way (an import resumed keeps the way it started)."""
    return settings.IMPORTS_SHARED and not contact_import.upsert_after


def import_share(
    contact_import: ContactImport, staged: _Staged, lease: jobs.Lease, kept: str = ""
) -> bool:
    """The coordinator's part, once the rows are staged in this session: the shared table,
    the chunks (recorded once), one task per chunk not yet done. False when the rows fit one
    chunk (and no chunk was recorded): the import then runs in this process.

    `kept`: the preview's table this session reads the rows from (contacts/imports/kept.py).
    It is UNLOGGED and indexed by email already, so it becomes the shared table by a rename;
    otherwise the session's staging table is copied."""
    chunks = ImportChunk.objects.filter(contact_import_id=contact_import.pk)
    recorded = chunks.exists()
    if staged.kept <= services.IMPORT_UPSERT_BATCH and not recorded:
        return False
    table = shared_table(contact_import.pk)
    drop_shared_table(contact_import.pk)
    with connection.cursor() as cursor:
        if kept:
            cursor.execute(f"ALTER TABLE {kept} RENAME TO {table}")
            cursor.execute(f"ALTER INDEX {kept}_email RENAME TO {table}_email")
        else:
            cursor.execute(f"CREATE UNLOGGED TABLE {table} AS TABLE {STAGE_TABLE}")
            cursor.execute(f"CREATE UNIQUE INDEX {table}_email ON {table} (email)")
            cursor.execute(f"ANALYZE {table}")
        if not recorded:
            bounds = services._email_bounds(cursor, staged.kept)
            batch = services.IMPORT_UPSERT_BATCH
            ImportChunk.objects.bulk_create(
                ImportChunk(
                    contact_import_id=contact_import.pk,
                    number=number,
                    lo=lo or "",
                    hi=hi or "",
                    rows=min(batch, staged.kept - (number - 1) * batch),
                )
                for number, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False), start=1)
            )
    # What the finish needs of the staging, for the worker that will run it.
    lease.write(
        rows=staged.rows,
        invalid_count=staged.invalid,
        duplicate_count=staged.duplicates,
        total_rows=staged.kept,
        processed_rows=sum(chunks.filter(done_at__isnull=False).values_list("rows", flat=True)),
    )
    pending = list(chunks.filter(done_at__isnull=True).values_list("number", flat=True))
    if not pending:  # every chunk was saved before the import was interrupted
        _queue_finish(contact_import.pk, lease.token)
    from contacts.tasks import upsert_import_chunk

    for number in pending:
        jobs.delay(
            upsert_import_chunk,
            contact_import.pk,
            number,
            lease.token,
            what=f"A part of the import #{contact_import.pk}",
            remedy="The import fails; resume it once the queue is back.",
        )
    return True


def import_chunk_run(*, contact_import_id: int, number: int, token: str) -> str:
    """One chunk of a shared import, under the import's lease (`token`). Returns "done",
    "done already" (another delivery saved it), "lease lost" (the import failed or was
    resumed under a new lease) or "failed" (the import records why)."""
    lease = jobs.Lease(ContactImport, contact_import_id, token)
    chunk = (
        ImportChunk.objects.select_related("contact_import__source")
        .filter(contact_import_id=contact_import_id, number=number)
        .first()
    )
    if chunk is None or chunk.done_at is not None:
        return "done already"
    contact_import = chunk.contact_import

    def work() -> str:
        lease.beat()
        reason = services.import_creation_decision(contact_import).status_source
        params = services._upsert_params(contact_import, reason, timezone.now())
        now = timezone.now()
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    services._upsert_sql(shared_table(contact_import_id)),
                    {**params, "lo": chunk.lo or None, "hi": chunk.hi or None},
                )
                created, updated = services.upsert_tally(cursor.fetchall())
                lease.write(
                    created_count=F("created_count") + created,
                    updated_count=F("updated_count") + updated,
                    processed_rows=F("processed_rows") + chunk.rows,
                    lease_expires_at=now + jobs.lease_duration(),
                )
                if not ImportChunk.objects.filter(pk=chunk.pk, done_at__isnull=True).update(
                    done_at=now
                ):
                    raise _ChunkDoneAlready
        except _ChunkDoneAlready:
            return "done already"
        return "done"

    outcome = _recorded(contact_import, lease, work)
    if outcome == "done" and not contact_import.chunks.filter(done_at__isnull=True).exists():
        _queue_finish(contact_import_id, token)
    return outcome


def _recorded(contact_import: ContactImport, lease: jobs.Lease, work: Callable[[], str]) -> str:
    """`work()` for the import under `lease`, its own failures recorded on the import, never
    raised: what `work` returns, "lease lost" (the import failed, or was resumed under a new
    lease) or "failed"."""
    try:
        return work()
    except jobs.LeaseLost:
        logger.warning("import %s: this worker lost its lease and stops", contact_import.pk)
        return "lease lost"
    except Exception as error:
        services.fail_internal(contact_import, error, lease)
        return "failed"


def _queue_finish(contact_import_id: int, token: str) -> None:
    from contacts.tasks import finish_import

    jobs.delay(
        finish_import,
        contact_import_id,
        token,
        what=f"The end of the import #{contact_import_id}",
        remedy="The import fails; resume it once the queue is back.",
    )


def import_finish(*, contact_import_id: int, token: str) -> str:
    """Every chunk is saved: the rest of the import, once (the first delivery claims the
    "saving" phase). Returns "done", "held", "not mine" (another delivery has it), "lease
    lost" or "failed"."""
    lease = jobs.Lease(ContactImport, contact_import_id, token)
    claimed = ContactImport.objects.filter(
        pk=contact_import_id, lease_token=token, phase="saving"
    ).update(phase="finishing")
    if not claimed:
        return "not mine"
    contact_import = ContactImport.objects.select_related("source", "committed_by").get(
        pk=contact_import_id
    )
    staged = _Staged(
        rows=contact_import.rows,
        invalid=contact_import.invalid_count,
        duplicates=contact_import.duplicate_count,
        kept=contact_import.total_rows,
    )

    def report(phase: str, done: int, total: int) -> None:
        lease.beat(phase=phase, processed_rows=done, total_rows=total)

    def work() -> str:
        with _shared_staging(contact_import_id):
            decision = services.import_creation_decision(contact_import)
            fields = services.import_finish_fields(contact_import, staged, decision, report)
        services.import_release(contact_import, lease, staged, fields)
        return str(contact_import.status)

    return _recorded(contact_import, lease, work)


@contextmanager
def _shared_staging(contact_import_id: int):
    """The shared table under the staging table's name (a temporary view, this session
    only), so the import's end reads it as an import in one process does; the shared table
    is dropped after, whatever happens (a resume builds it again)."""
    table = shared_table(contact_import_id)
    with connection.cursor() as cursor:
        # Without a broker the tasks run inside the coordinator's job, whose session still
        # has its own staging table, with the same rows: that one is read then.
        cursor.execute("SELECT to_regclass(%s)", [f"pg_temp.{STAGE_TABLE}"])
        view = cursor.fetchone()[0] is None
        if view:
            stage_view(cursor, table)
    try:
        yield
    finally:
        if view:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP VIEW IF EXISTS {STAGE_TABLE}")
        drop_shared_table(contact_import_id)
