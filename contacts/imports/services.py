"""CSV import: upload → mapping → preview → commit → run.

`contact_import_create` (size limit, hash, header, columns mapped by their aliases) →
`contact_import_configure` → `contact_import_preview` (counts and the cost, nothing
written to contacts) → `contact_import_commit` (queues the background job) →
`contact_import_run`. Contacts are upserted by email: on PostgreSQL one INSERT … ON
CONFLICT (email) DO UPDATE … WHERE changed statement per IMPORT_UPSERT_BATCH staged
rows; elsewhere chunks of bulk_create/bulk_update. New contacts record the reason
`contacts_creation_policy` gives for the import (asked once per import: source type
"import", the import's id and file name); existing contacts get the row's non-empty
values only, keep their reason and are never downgraded; a marketing import makes its
contacts marketing afterwards through the status service (the same reason on the ledger).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from dataclasses import asdict, dataclass

from django.db import IntegrityError, connection, transaction
from django.db.models import F, QuerySet, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce
from django.utils import timezone

from contacts.hooks import (
    contacts_changed,
)
from contacts.imports.kept import (
    kept_dropped_on_error,
    kept_forget,
    kept_open,
    kept_table_new,
)
from contacts.imports.migration import (
    hubspot_check_records,
    hubspot_keeps_statuses,
    hubspot_pending_part,
    hubspot_preview,
    hubspot_reason_name,
    hubspot_record_members,
    hubspot_write_records,
)
from contacts.imports.models import (
    ContactImport,
    ImportedContact,
    ImportFormat,
    ImportStatus,
)
from contacts.imports.parsing import (
    _FLAG_FIELDS,
    _INSERT_DEFAULTS,
    _TEXT_FIELDS,
    HUBSPOT_STATUS_FIELDS,
    IMPORT_CONTACT_FIELDS,
    IMPORT_HEAD_BYTES,
    ImportFileError,
    ImportStateError,
    _check_import_source,
    _check_marketing_allowed,
    _check_status_choice,
    _read_head,
    import_check_size,
    import_detect_format,
    import_detect_mapping,
    import_resolve_mapping,
    import_source_default,
)
from contacts.imports.staging import (
    STAGE_TABLE,
    ImportProgress,
    _drop_staging,
    _fast_path,
    _stage,
    _Staged,
)
from contacts.models import (
    Contact,
    Source,
    StatusSourceType,
)
from contacts.services import (
    CreationDecision,
    contact_reason_columns,
    contacts_creation_policy,
)
from contacts.status.models import (
    StatusChangeRequest,
)
from contacts.status.results import SET_MARKETING, ChangeHeld, StatusPreview, StatusSource
from contacts.status.rules import NON_MARKETING, can_change_marketing_status
from contacts.status.services import contacts_set_marketing, contacts_status_preview
from contacts.status.sql import CONTACT_TABLE
from crm import jobs
from crm.locks import lock_import

IMPORT_UPSERT_BATCH = 100_000  # staged rows per upsert statement on PostgreSQL (~1-2 s each)

IMPORT_PORTABLE_BATCH = 2_000  # rows per bulk_create/bulk_update chunk elsewhere (~0.5 MB)

logger = logging.getLogger(__name__)


def contact_import_create(
    *,
    file,
    file_name: str,
    actor=None,
    source: Source | None = None,
    mapping: dict | None = None,
    marketing: bool = False,
    file_format: str | None = None,
) -> ContactImport:
    """Store an uploaded CSV and read its header; nothing is imported yet.

    `file` is a Django File (an upload, or `File(open(path, "rb"))`). `file_format` is
    "csv", "hubspot" (HubSpot's contacts export: its columns mapped by HubSpot's labels)
    or None: detected from the header. Refused with `ImportFileError` (too big, not
    UTF-8, no header, a bad mapping) or `ImportNotAllowed` (marketing, or keeping a
    HubSpot export's statuses, without the permission) before anything is stored.
    """
    _check_marketing_allowed(actor, marketing)
    size = file.size
    import_check_size(size)
    source = source or import_source_default()
    _check_import_source(source)
    file.seek(0)
    head = _read_head(file.read(IMPORT_HEAD_BYTES))
    if file_format is None:
        file_format = import_detect_format(head.columns)
    elif file_format not in ImportFormat.values:
        raise ImportFileError(
            f"“{file_format}” is not a file format an import reads: use "
            + " or ".join(f"“{value}” ({label})" for value, label in ImportFormat.choices)
            + "."
        )
    resolved = import_resolve_mapping(
        head.columns, _without_statuses(head.columns, mapping, file_format, actor), file_format
    )
    _check_status_choice(marketing, resolved)
    _check_marketing_allowed(actor, marketing, resolved)
    digest = hashlib.sha256()
    file.seek(0)
    for chunk in file.chunks():
        digest.update(chunk)
    file.seek(0)
    contact_import = ContactImport(
        file_name=(file_name or "import.csv")[:255],
        file_size=size,
        file_hash=digest.hexdigest(),
        delimiter=head.delimiter,
        format=file_format,
        columns=head.columns,
        mapping=resolved,
        marketing=marketing,
        source=source,
        created_by=actor if getattr(actor, "pk", None) else None,
    )
    contact_import.file.save(contact_import.file_name, file, save=False)
    try:
        contact_import.save()
    except Exception:
        contact_import.file.delete(save=False)
        raise
    return contact_import


def _without_statuses(columns: list[str], given: dict | None, file_format: str, actor) -> dict:
    """The caller's mapping, plus, for a user who may not change statuses, the HubSpot
    status columns found by their labels set to be ignored: their contacts are imported as
    non-marketing (the preview says so). Mapping one explicitly is refused instead."""
    given = dict(given) if isinstance(given, dict) else ({} if given is None else given)
    if actor is None or can_change_marketing_status(actor) or not isinstance(given, dict):
        return given
    for column, name in import_detect_mapping(columns, file_format).items():
        if name in HUBSPOT_STATUS_FIELDS and column not in given:
            given[column] = ""
    return given


def contact_import_configure(
    *, contact_import: ContactImport, mapping: dict | None, marketing: bool, actor=None
) -> ContactImport:
    """Change the mapping or the marketing flag before the commit; the preview must be redone."""
    if contact_import.status not in (ImportStatus.DRAFT, ImportStatus.PREVIEWED):
        raise ImportStateError("This import was already committed; its mapping is fixed.")
    mapping = import_resolve_mapping(contact_import.columns, mapping, contact_import.format)
    _check_status_choice(marketing, mapping)
    _check_marketing_allowed(actor, marketing, mapping)
    kept_forget(contact_import)  # staged with the old mapping
    contact_import.mapping = mapping
    contact_import.marketing = marketing
    contact_import.status = ImportStatus.DRAFT
    contact_import.preview = {}
    contact_import.save(update_fields=["mapping", "marketing", "status", "preview", "updated_at"])
    return contact_import


def import_creation_decision(contact_import: ContactImport) -> CreationDecision:
    """What the creation rule decides for every contact this import creates.

    Asked once per import, never per row: the decision is the same for all its new
    contacts. The import's "set all as marketing" is the requested status (so the import
    source's own default does not apply, DESIGN §1.3) and the import — source type
    "import", its id, its file name — is the reason, recorded on each new contact by the
    upsert's INSERT and on the ledger rows of the marketing part.
    """
    name = contact_import.file_name
    if contact_import.format == ImportFormat.HUBSPOT:
        name = hubspot_reason_name(name)  # a migration, which its ledger rows say
    return contacts_creation_policy(
        source=contact_import.source,
        requested_marketing=contact_import.marketing,
        requester=StatusSource(StatusSourceType.IMPORT, id=str(contact_import.pk), name=name),
    )


def _changed_sql(s: str, c: str) -> str:
    """SQL: the staged row `s` has a non-empty value its contact `c` lacks (flags: only yes)."""
    parts = [f"({s}.{n} IS NOT NULL AND {s}.{n} <> {c}.{n})" for n in _TEXT_FIELDS]
    parts += [f"({s}.{n} AND NOT {c}.{n})" for n in _FLAG_FIELDS]
    return "(" + " OR ".join(parts) + ")"


def _apply_row(contact: Contact, staged: dict) -> bool:
    """Python twin of `_changed_sql` and the upsert's SET: the non-empty values, flags only
    ever set. True when the contact changed."""
    changed = False
    for name in _TEXT_FIELDS:
        value = staged[name]
        if value is not None and value != getattr(contact, name):
            setattr(contact, name, value)
            changed = True
    for name in _FLAG_FIELDS:
        if staged[name] and not getattr(contact, name):
            setattr(contact, name, True)
            changed = True
    return changed


@dataclass
class _ChangeCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0


def _count_changes() -> _ChangeCounts:
    """What the upsert would do to the staged rows: new, updated, unchanged (one query)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COALESCE(SUM(CASE WHEN c.id IS NULL THEN 1 ELSE 0 END), 0), "
            f"COALESCE(SUM(CASE WHEN c.id IS NOT NULL AND {_changed_sql('s', 'c')} THEN 1 ELSE 0 END), 0), "
            f"COUNT(c.id) FROM {STAGE_TABLE} s LEFT JOIN {CONTACT_TABLE} c ON c.email = s.email"
        )
        new, updated, existing = cursor.fetchone()
    return _ChangeCounts(new=int(new), updated=int(updated), unchanged=int(existing) - int(updated))


_UPSERT_COLUMNS = (
    "created_at, updated_at, email, " + ", ".join(IMPORT_CONTACT_FIELDS[1:]) + ", lead_score, "
    "last_engaged_at, source_id, marketing_status, marketing_until, marketing_reason_type, "
    "marketing_reason_id, marketing_reason_name, marketing_changed_at"
)


def _upsert_sql(table: str = STAGE_TABLE) -> str:
    """PostgreSQL: one statement for the staged emails in (lo, hi] (None: unbounded), read
    from `table` (the session's staging table, or an import's shared one).

    New emails are inserted non-marketing with the import's source and the creation
    rule's reason (three constant parameters). An existing email takes the staged row's
    non-empty values — read back from the staging table by its unique email index,
    because EXCLUDED cannot tell an empty cell from a default — and only when something
    differs (WHERE), so a re-run writes nothing. No status or reason column is in the
    SET list.
    """
    inserted = ", ".join(
        f"COALESCE(s.{n}, {'FALSE' if n in _FLAG_FIELDS else repr(_INSERT_DEFAULTS.get(n, ''))})"
        for n in IMPORT_CONTACT_FIELDS[1:]
    )
    updated = ", ".join(
        [f"COALESCE(s2.{n}, c.{n})" for n in _TEXT_FIELDS]
        + [f"c.{n} OR COALESCE(s2.{n}, FALSE)" for n in _FLAG_FIELDS]
    )
    return f"""
        WITH up AS (
            INSERT INTO {CONTACT_TABLE} AS c ({_UPSERT_COLUMNS})
            SELECT %(now)s, %(now)s, s.email, {inserted}, 0, NULL, %(source)s, '{NON_MARKETING}', NULL,
                   %(reason_type)s, %(reason_id)s, %(reason_name)s, NULL
            FROM {table} s
            WHERE (%(lo)s IS NULL OR s.email > %(lo)s) AND (%(hi)s IS NULL OR s.email <= %(hi)s)
            ORDER BY s.email
            ON CONFLICT (email) DO UPDATE SET
                ({", ".join(_TEXT_FIELDS + _FLAG_FIELDS)}, updated_at) =
                (SELECT {updated}, %(now)s FROM {table} s2 WHERE s2.email = EXCLUDED.email)
            WHERE EXISTS (
                SELECT 1 FROM {table} s2
                WHERE s2.email = EXCLUDED.email AND {_changed_sql("s2", "c")}
            )
            RETURNING (xmax = 0) AS inserted
        )
        SELECT inserted, COUNT(*) FROM up GROUP BY inserted
    """


def _email_bounds(cursor, kept: int) -> list[str | None]:
    """Every IMPORT_UPSERT_BATCH-th staged email, in order: the chunk bounds (one index scan)."""
    cursor.execute(
        f"SELECT email FROM (SELECT email, row_number() OVER (ORDER BY email) AS r "
        f"FROM {STAGE_TABLE}) x WHERE r %% %s = 0 AND r < %s ORDER BY email",
        [IMPORT_UPSERT_BATCH, kept],
    )
    return [None, *(row[0] for row in cursor.fetchall()), None]


def _upsert_params(contact_import: ContactImport, reason: StatusSource, now: dt.datetime) -> dict:
    """The constant parameters of `_upsert_sql` (the bounds `lo` and `hi` are per chunk)."""
    columns = contact_reason_columns(reason)
    return {
        "now": now,
        "source": contact_import.source_id,
        "reason_type": columns["marketing_reason_type"],
        "reason_id": columns["marketing_reason_id"],
        "reason_name": columns["marketing_reason_name"],
    }


def _upsert_postgresql(
    contact_import: ContactImport,
    staged: _Staged,
    lease: jobs.Lease,
    report: ImportProgress,
    reason: StatusSource,
) -> None:
    """Chunks of the staged rows in email order (walking the staging table's unique email
    index), so each chunk fills the contacts' email indexes left to right. Each chunk
    commits with the import's cursor and counts; the chunks a killed run saved are skipped."""
    sql = _upsert_sql()
    params = _upsert_params(contact_import, reason, timezone.now())
    after = contact_import.upsert_after or None
    with connection.cursor() as cursor:
        bounds = _email_bounds(cursor, staged.kept)
        cursor.execute(f"SELECT MAX(email) FROM {STAGE_TABLE}")
        last = cursor.fetchone()[0] or ""
        for number, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False), start=1):
            if after is not None:
                if hi is not None and hi <= after:
                    continue  # saved before the run was interrupted
                lo = after if lo is None or lo < after else lo
            with transaction.atomic():
                cursor.execute(sql, {**params, "lo": lo, "hi": hi})
                created, updated = upsert_tally(cursor.fetchall())
                _save_chunk(lease, hi or last, created, updated)
            report("saving", min(number * IMPORT_UPSERT_BATCH, staged.kept), staged.kept)


def upsert_tally(rows) -> tuple[int, int]:
    """(created, updated) from the upsert statement's (inserted, count) rows."""
    counts = dict(rows)
    return counts.get(True, 0), counts.get(False, 0)


def _save_chunk(lease: jobs.Lease, through: str, created: int, updated: int) -> None:
    """In the chunk's transaction: the cursor and the counts move with the chunk's rows."""
    lease.write(
        upsert_after=through,
        created_count=F("created_count") + created,
        updated_count=F("updated_count") + updated,
    )


def _upsert_portable(
    contact_import: ContactImport,
    staged: _Staged,
    lease: jobs.Lease,
    report: ImportProgress,
    reason: StatusSource,
) -> None:
    """Any database: chunks of staged rows in email order, bulk_create the new (with the
    creation rule's reason), bulk_update the changed (never their reason); each chunk
    commits with the import's cursor and counts."""
    fields = IMPORT_CONTACT_FIELDS[1:]
    reason_columns = contact_reason_columns(reason)
    after = contact_import.upsert_after
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {STAGE_TABLE} WHERE email <= %s", [after])
        done = cursor.fetchone()[0]
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {', '.join(IMPORT_CONTACT_FIELDS)} FROM {STAGE_TABLE} "
                "WHERE email > %s ORDER BY email LIMIT %s",
                [after, IMPORT_PORTABLE_BATCH],
            )
            rows = cursor.fetchall()
        if not rows:
            break
        after = rows[-1][0]
        chunk = {
            email: {
                name: (bool(value) if value is not None and name in _FLAG_FIELDS else value)
                for name, value in zip(fields, values, strict=True)
            }
            for email, *values in rows
        }
        for attempt in (1, 2):
            existing = Contact.objects.filter(email__in=list(chunk)).only("id", "email", *fields)
            found = {contact.email: contact for contact in existing}
            now = timezone.now()
            creates = [
                Contact(
                    email=email,
                    source_id=contact_import.source_id,
                    **reason_columns,
                    **{
                        name: (
                            value
                            if value is not None
                            else (False if name in _FLAG_FIELDS else _INSERT_DEFAULTS.get(name, ""))
                        )
                        for name, value in values.items()
                    },
                )
                for email, values in chunk.items()
                if email not in found
            ]
            changes = [c for email, c in found.items() if _apply_row(c, chunk[email])]
            for contact in changes:
                contact.updated_at = now
            try:
                with transaction.atomic():
                    Contact.objects.bulk_create(creates, batch_size=IMPORT_PORTABLE_BATCH)
                    Contact.objects.bulk_update(
                        changes, [*fields, "updated_at"], batch_size=IMPORT_PORTABLE_BATCH
                    )
                    _save_chunk(lease, after, len(creates), len(changes))
            except IntegrityError:
                if attempt == 2:
                    raise
                continue  # someone created one of these emails meanwhile: read them again
            break
        done += len(rows)
        report("saving", done, staged.kept)


def _import_target(contact_import: ContactImport) -> QuerySet:
    members = ImportedContact.objects.filter(contact_import_id=contact_import.pk)
    return Contact.objects.filter(pk__in=members.values("contact_id"))


def _record_members(contact_import: ContactImport) -> None:
    """The marketing import's contacts, by email, into ImportedContact (once each)."""
    table = ImportedContact._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (contact_import_id, contact_id, pending) "
            f"SELECT %s, c.id, %s FROM {STAGE_TABLE} s JOIN {CONTACT_TABLE} c ON c.email = s.email "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table} m "
            "WHERE m.contact_import_id = %s AND m.contact_id = c.id)",
            [contact_import.pk, False, contact_import.pk],
        )


def _json_preview(preview: StatusPreview) -> dict:
    data = asdict(preview)
    for key, value in data.items():
        if isinstance(value, dt.datetime):
            data[key] = value.isoformat()
    return data


def contact_import_preview(*, contact_import: ContactImport, actor=None) -> ContactImport:
    """Read the whole file and say what committing it would do; contacts are not touched.

    `preview` holds: rows, new, updated, unchanged, invalid, duplicates, becomes_marketing
    (0 unless the import is marked marketing), marketing_candidates (what marking it
    would make marketing), the status service's preview of that change — its `extra`
    carries billing's cost, new contacts counted through `additional` — and
    `same_file` (earlier imports of the same bytes). Row errors are stored already.
    """
    if contact_import.status not in (ImportStatus.DRAFT, ImportStatus.PREVIEWED):
        raise ImportStateError("This import was already committed; there is nothing to preview.")
    _check_marketing_allowed(actor, contact_import.marketing, contact_import.mapping)
    keeps_statuses = hubspot_keeps_statuses(contact_import)
    file_statuses = None
    kept = kept_table_new(contact_import)
    try:
        with kept_dropped_on_error(contact_import):
            staged = _stage(contact_import, None, kept or STAGE_TABLE)
            hubspot_check_records(contact_import, staged)
            counts = _count_changes()
            if keeps_statuses:
                file_statuses, status = hubspot_preview(contact_import, timezone.now())
            else:
                existing = Contact.objects.filter(
                    email__in=RawSQL(f"SELECT email FROM {STAGE_TABLE}", [])
                )
                status = contacts_status_preview(
                    contacts=existing, operation=SET_MARKETING, additional=counts.new
                )
    except ImportFileError as error:
        _fail(contact_import, str(error))
        raise
    finally:
        with connection.cursor() as cursor:
            _drop_staging(cursor)
    candidates = status.would_change + status.would_cancel
    contact_import.preview = {
        "rows": staged.rows,
        "new": counts.new,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "invalid": staged.invalid,
        "duplicates": staged.duplicates,
        "marketing_candidates": candidates,
        "becomes_marketing": candidates if contact_import.marketing or keeps_statuses else 0,
        "already_marketing": status.already,
        "format": contact_import.format,
        "file_statuses": file_statuses,
        "notes": _hubspot_notes(contact_import),
        "status_preview": _json_preview(status),
        "same_file": list(
            ContactImport.objects.filter(
                file_hash=contact_import.file_hash,
                status__in=[ImportStatus.DONE, ImportStatus.HELD],
            )
            .exclude(pk=contact_import.pk)
            .order_by("-pk")
            .values_list("pk", flat=True)[:5]
        ),
    }
    contact_import.rows = staged.rows
    contact_import.invalid_count = staged.invalid
    contact_import.duplicate_count = staged.duplicates
    contact_import.total_rows = staged.rows
    contact_import.status = ImportStatus.PREVIEWED
    contact_import.previewed_at = timezone.now()
    contact_import.save()
    return contact_import


def _hubspot_notes(contact_import: ContactImport) -> list[str]:
    """What the preview must say about a HubSpot export's status columns left out."""
    if contact_import.format != ImportFormat.HUBSPOT or hubspot_keeps_statuses(contact_import):
        return []
    detected = import_detect_mapping(contact_import.columns, contact_import.format)
    left_out = [
        column
        for column, name in detected.items()
        if name in HUBSPOT_STATUS_FIELDS and not contact_import.mapping.get(column)
    ]
    if not left_out:
        return []
    columns = " and ".join(f"“{column}”" for column in left_out)
    return [
        f"The column {columns} is not imported, so HubSpot's marketing statuses are not kept: "
        "new contacts are non-marketing and no contact's status changes"
        + (
            "."
            if contact_import.marketing
            or (
                contact_import.created_by and can_change_marketing_status(contact_import.created_by)
            )
            else " (keeping them needs the permission contacts.change_marketing_status)."
        )
    ]


def contact_import_commit(
    *, contact_import: ContactImport, actor=None, enqueue: bool = True
) -> ContactImport:
    """Queue a previewed import's job (after commit). Committing again changes nothing."""
    _check_marketing_allowed(actor, contact_import.marketing, contact_import.mapping)
    with transaction.atomic():
        locked = lock_import(contact_import.pk)
        if locked.status == ImportStatus.DRAFT:
            raise ImportStateError(
                "Preview the import before committing it (its mapping changed since the last "
                "preview, or it was never previewed)."
            )
        if locked.status == ImportStatus.FAILED:
            raise ImportStateError(f"This import failed and cannot run: {locked.message}")
        if locked.status != ImportStatus.PREVIEWED:
            return locked  # queued, running or finished already
        locked.status = ImportStatus.QUEUED
        locked.phase = "queued"
        locked.processed_rows = 0
        locked.committed_by = actor if getattr(actor, "pk", None) else None
        locked.committed_at = timezone.now()
        locked.save()
        if enqueue:
            _enqueue_run(locked)
    return locked


def _enqueue_run(contact_import: ContactImport) -> None:
    """Queue the import's job after commit. A broker that does not answer leaves the import
    failed with the reason (nothing was imported; a resume queues it again) and raises
    `JobNotQueued` to the caller."""
    from contacts.tasks import run_contact_import

    pk = contact_import.pk

    def not_queued(message: str) -> None:
        ContactImport.objects.filter(pk=pk, status=ImportStatus.QUEUED).update(
            status=ImportStatus.FAILED, phase="", message=message
        )

    jobs.enqueue(
        run_contact_import,
        pk,
        what=f"The import #{pk} ({contact_import.file_name})",
        remedy="It is stored and nothing was imported yet: resume it once the queue is back.",
        on_failure=not_queued,
    )


def contact_import_resume(
    *, contact_import: ContactImport, actor=None, enqueue: bool = True
) -> ContactImport:
    """Queue a committed import again after a failure (or a lost task): it goes on where it
    stopped — the saved chunks are skipped, the counts kept, the marketing part replayed by
    its key — and ends as an uninterrupted run would. Refused while a worker holds it."""
    _check_marketing_allowed(actor, contact_import.marketing, contact_import.mapping)
    jobs.jobs_expire_stale(model=ContactImport, pk=contact_import.pk)
    with transaction.atomic():
        locked = lock_import(contact_import.pk)
        if locked.status == ImportStatus.RUNNING:
            raise ImportStateError(
                "This import is running: its worker renewed its lease until "
                f"{locked.lease_expires_at:%H:%M:%S} UTC. It can be resumed once it stops."
            )
        if locked.status in (ImportStatus.DONE, ImportStatus.HELD):
            raise ImportStateError("This import has finished; there is nothing to resume.")
        if locked.committed_at is None:
            raise ImportStateError(
                "This import was never committed: preview and commit it instead."
                if locked.status != ImportStatus.FAILED
                else f"This import failed before it was committed: {locked.message}"
            )
        locked.status = ImportStatus.QUEUED
        locked.phase = "queued"
        locked.message = ""
        locked.finished_at = None
        locked.save(update_fields=["status", "phase", "message", "finished_at", "updated_at"])
        if enqueue:
            _enqueue_run(locked)
    return locked


def _fail(contact_import: ContactImport, message: str, lease: jobs.Lease | None = None) -> None:
    fields = {
        "status": ImportStatus.FAILED,
        "message": message,
        "phase": "",
        "finished_at": timezone.now(),
    }
    if lease is None:
        ContactImport.objects.filter(pk=contact_import.pk).update(**fields)
    else:
        lease.release(**fields)  # not if another worker has taken the import over
    contact_import.refresh_from_db()


def fail_internal(contact_import: ContactImport, error: Exception, lease: jobs.Lease) -> None:
    """An error of our own stopped the import: a sentence on it, the trace in the log."""
    logger.exception("import %s failed", contact_import.pk)
    _fail(
        contact_import,
        f"The import stopped on an internal error ({error.__class__.__name__}).",
        lease,
    )


def contact_import_run(
    *, contact_import_id: int, progress: ImportProgress | None = None
) -> ContactImport:
    """The background job: the staged rows (on PostgreSQL the preview's, kept for the run
    by contacts/imports/kept.py; else the file staged again), the contacts upserted, then
    the marketing part.

    Runs a queued import, or a running one whose worker died (its lease ran out: a
    redelivered task); anything else is returned as it is. The worker holds the import's
    lease (crm.jobs), renewed as it reports progress (phase, processed / total rows). Each
    upsert chunk commits with the import's cursor and counts, so a rerun stages the same
    file again, skips what was saved and ends as one uninterrupted run would: the same
    contacts, counts, ledger rows (the status change has the idempotency key
    "import:<id>:marketing") and counters. Row errors are written afresh when the file is
    read again; the preview's stand when its rows are.
    """
    lease = jobs.lease_claim(
        ContactImport,
        contact_import_id,
        statuses=[ImportStatus.QUEUED, ImportStatus.RUNNING],
        status=ImportStatus.RUNNING,
        started_at=Coalesce(F("started_at"), Value(timezone.now())),
        phase="reading",
        processed_rows=0,
        message="",
    )
    contact_import = ContactImport.objects.select_related("source", "committed_by").get(
        pk=contact_import_id
    )
    if lease is None:
        return contact_import

    def report(phase: str, done: int, total: int) -> None:
        lease.beat(phase=phase, processed_rows=done, total_rows=total)
        if progress:
            progress(phase, done, total)

    from contacts.imports.shared import drop_shared_table, import_share, import_shares

    fast = _fast_path()
    lost = False
    try:
        decision = import_creation_decision(contact_import)
        # An import shared before keeps its chunks' counts, whichever way it goes on: rows
        # saved already are unchanged to the upsert, which counts only what it writes.
        chunked = fast and contact_import.chunks.exists()
        shares = fast and progress is None and import_shares(contact_import)
        if not contact_import.upsert_after and not chunked:
            lease.write(created_count=0, updated_count=0)  # nothing saved yet: afresh
        staged = kept_open(contact_import)  # the preview's rows, or the file read again
        kept = contact_import.staged_table if staged else ""
        if staged is None:
            staged = _stage(contact_import, report)
        else:
            report("reading", staged.rows, staged.rows)
        hubspot_check_records(contact_import, staged)
        report("saving", 0, staged.kept)
        if shares and import_share(contact_import, staged, lease, kept):
            # The workers save its chunks; the last one queues its end. (Without a broker
            # they have run already, here.)
            contact_import.refresh_from_db()
            return contact_import
        upsert = _upsert_postgresql if fast else _upsert_portable
        upsert(contact_import, staged, lease, report, decision.status_source)
        fields = import_finish_fields(contact_import, staged, decision, report)
        if chunked:  # a shared import ended here (the command's resume): its table goes
            drop_shared_table(contact_import.pk)
    except jobs.LeaseLost:
        # The worker that holds the lease now may be reading the preview's rows: they stay.
        lost = True
        logger.warning("import %s: this worker lost its lease and stops", contact_import_id)
        contact_import.refresh_from_db()
        return contact_import
    except (ImportFileError, jobs.JobNotQueued) as error:  # a sentence for the user
        _fail(contact_import, str(error), lease)
        return contact_import
    except Exception as error:
        fail_internal(contact_import, error, lease)
        return contact_import
    finally:
        with connection.cursor() as cursor:
            _drop_staging(cursor)
        if not lost:  # read once; a resume reads the file
            kept_forget(contact_import)
    import_release(contact_import, lease, staged, fields)
    return contact_import


def import_finish_fields(
    contact_import: ContactImport,
    staged: _Staged,
    decision: CreationDecision,
    report: ImportProgress,
) -> dict:
    """Once every row is saved: the HubSpot records, the counts, the marketing part and the
    notices to the contact listeners, while the staging table still names the rows; the
    import's fields to write as it ends."""
    hubspot_write_records(contact_import)
    contact_import.refresh_from_db(fields=["created_count", "updated_count"])
    created, updated = contact_import.created_count, contact_import.updated_count
    fields = {
        "rows": staged.rows,
        "invalid_count": staged.invalid,
        "duplicate_count": staged.duplicates,
        "unchanged_count": staged.kept - created - updated,
        "status": ImportStatus.DONE,
        "message": "",
    }
    if decision.marketing or hubspot_keeps_statuses(contact_import):
        report("marketing", 0, staged.kept)
        fields.update(_marketing_part(contact_import, decision.status_source))
    if created or updated:
        _import_notify_changed(contact_import.started_at)
    return fields


def import_release(
    contact_import: ContactImport, lease: jobs.Lease, staged: _Staged, fields: dict
) -> None:
    """The import ends (done or held): `fields` written, the lease given up."""
    fields.update(phase="", finished_at=timezone.now(), upsert_after="")
    fields["processed_rows"] = fields["total_rows"] = staged.kept
    lease.release(**fields)
    contact_import.refresh_from_db()


IMPORT_NOTIFY_BATCH = 5_000  # ids per contact-listener notification (~40 KB)


def _import_notify_changed(started: dt.datetime) -> None:
    """The contacts an import created or updated (their updated_at moved), to the contact
    listeners (event-triggered workflows), a batch of ids at a time. Read through the
    staging table's emails (the contacts' unique email index): the cost follows the
    import, not the contacts table."""
    from contacts.hooks import has_contact_listeners

    if not has_contact_listeners():
        return
    ids = (
        Contact.objects.filter(
            email__in=RawSQL(f"SELECT email FROM {STAGE_TABLE}", []), updated_at__gte=started
        )
        .order_by()
        .values_list("pk", flat=True)
    )
    batch: list[int] = []
    for pk in ids.iterator(chunk_size=IMPORT_NOTIFY_BATCH):
        batch.append(pk)
        if len(batch) == IMPORT_NOTIFY_BATCH:
            contacts_changed(batch)
            batch = []
    contacts_changed(batch)


def _marketing_part(contact_import: ContactImport, source: StatusSource) -> dict:
    """Make the import's contacts marketing: one guarded set-based call of the status service,
    whose ledger rows name `source` (the creation rule's reason for the import).

    Held by billing's guardrails (`ChangeHeld`): the contacts stay non-marketing and the
    import is HELD; an approver runs the same change later (same idempotency key,
    the same durable target), and `contact_import_sync` then marks the import done.
    """
    keeps_statuses = hubspot_keeps_statuses(contact_import)
    if keeps_statuses:  # the rows the file says are marketing (or pending), not all
        hubspot_record_members(contact_import, timezone.now())
    else:
        _record_members(contact_import)
    target = _import_target(contact_import)
    key = contact_import.marketing_idempotency_key
    actor = contact_import.committed_by or contact_import.created_by
    if not StatusChangeRequest.objects.filter(idempotency_key=key).exists():
        preview = contacts_status_preview(contacts=target, operation=SET_MARKETING)
        if not (preview.would_change or preview.would_cancel):
            result = {"already": preview.already}
            if keeps_statuses:
                result.update(hubspot_pending_part(contact_import, source, actor))
            return {"marketing_count": 0, "marketing_result": result}
    try:
        result = contacts_set_marketing(
            contacts=target, source=source, actor=actor, idempotency_key=key, guarded=True
        )
    except ChangeHeld as held:
        return {
            "status": ImportStatus.HELD,
            "message": (
                f"The contacts were imported as non-marketing; setting them as marketing is held. "
                f"{held}"
            ),
        }
    marketing_result = result.as_dict()
    if keeps_statuses:
        marketing_result.update(hubspot_pending_part(contact_import, source, actor))
    return {
        "marketing_count": result.changed + result.cancelled,
        "marketing_result": marketing_result,
    }


def contact_import_sync(*, contact_import: ContactImport) -> ContactImport:
    """An import as it stands when its page or API is read: a running import whose worker
    died (its lease ran out) is marked failed; a held import whose marketing part an
    approver has run since is marked done."""
    if contact_import.status == ImportStatus.RUNNING:
        if jobs.jobs_expire_stale(model=ContactImport, pk=contact_import.pk):
            contact_import.refresh_from_db()
        return contact_import
    if contact_import.status != ImportStatus.HELD:
        return contact_import
    request = StatusChangeRequest.objects.filter(
        idempotency_key=contact_import.marketing_idempotency_key
    ).first()
    if request is None:
        return contact_import
    result = dict(request.result or {})
    if hubspot_keeps_statuses(contact_import):  # the downgrades the file asked for, once
        source = import_creation_decision(contact_import).status_source
        actor = contact_import.committed_by or contact_import.created_by
        result.update(hubspot_pending_part(contact_import, source, actor))
    ContactImport.objects.filter(pk=contact_import.pk, status=ImportStatus.HELD).update(
        status=ImportStatus.DONE,
        marketing_result=result,
        marketing_count=result.get("changed", 0) + result.get("cancelled", 0),
        message="The marketing part was approved and has run.",
    )
    contact_import.refresh_from_db()
    return contact_import


def contact_import_discard(*, contact_import: ContactImport) -> None:
    """Delete an import that was never committed, with its file and row errors."""
    if contact_import.status not in (
        ImportStatus.DRAFT,
        ImportStatus.PREVIEWED,
        ImportStatus.FAILED,
    ):
        raise ImportStateError("A committed import is a record of what was imported; it stays.")
    if connection.vendor == "postgresql":  # the rows a shared upsert left, if it failed
        from contacts.imports.shared import drop_shared_table

        drop_shared_table(contact_import.pk)
    kept_forget(contact_import)
    contact_import.file.delete(save=False)
    contact_import.delete()
