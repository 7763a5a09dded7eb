"""CSV import: streaming the file, validating each row and staging the good ones.

One cheap Python pass normalises and validates each row (the same rules on every
database) and writes the good rows to a temporary staging table — COPY on PostgreSQL,
executemany elsewhere — and the bad ones to `ImportRowError`. Duplicates are resolved in
SQL (the last row of an email wins), so memory stays flat whatever the file's size.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter

from django.db import IntegrityError, connection, transaction

from contacts.imports.cleaning import ColumnCleaner, column_cleaner, value_cleaner
from contacts.imports.models import (
    ContactImport,
    ImportRowError,
)
from contacts.imports.parsing import IMPORT_FIELDS, IMPORT_STAGED_FIELDS, ImportFileError
from crm.calendar import BillingCalendar
from crm.collector import collector_paused
from crm.inputs import NUL

IMPORT_STAGE_BATCH = 50_000  # rows parsed between two staging writes and progress updates

IMPORT_ERROR_BATCH = 5_000  # ImportRowError rows per bulk_create

IMPORT_FIELD_LIMIT = 1_000_000  # characters in one value (csv.field_size_limit)

IMPORT_SORT_MEMORY = "256MB"  # PostgreSQL work_mem for the dedupe sort of a large file

# The staging table's statistics target. The upsert's plans (each chunk's range read
# through the unique email index, the join to the contacts by email) come out the same
# from 3,000 sampled rows as from the default 100's 30,000, and ANALYZE takes a tenth of
# the time (16 ms against 160 ms at 1,000,000 rows).
IMPORT_STAGE_STATISTICS = 10

STAGE_TABLE = "import_stage"

FORCE_PORTABLE = False  # tests flip it to run the portable path on PostgreSQL

ImportProgress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class _Batch:
    rows: list[tuple]  # (line, email, …): the values of `staged_fields`, None = empty
    errors: list[tuple[int, str, str]]  # (line, column, message)
    read: int  # data rows read so far (blank lines not counted)
    invalid: int  # rows of this batch with an error


def _open_text(contact_import: ContactImport):
    handle = contact_import.file.storage.open(contact_import.file.name, "rb")
    return io.TextIOWrapper(getattr(handle, "file", handle), encoding="utf-8-sig", newline="")


# (position in the staged row, index in the record, column cleaner, column name)
_Mapped = list[tuple[int, int, ColumnCleaner, str]]


def staged_fields(contact_import: ContactImport) -> list[str]:
    """The fields the import's mapping stages, in IMPORT_STAGED_FIELDS' order (email first).
    Only these are written to the staging table: the others stay NULL there, as an empty
    cell does, and a row of the file costs no more for the fields it does not have."""
    mapped = set(contact_import.mapping.values())
    return [name for name in IMPORT_STAGED_FIELDS if name in mapped]


_CLEAN_RUN = 1_000  # records cleaned together: a column of them stays in the CPU's cache


def _cleaned(
    records: list[list[str]], lines: list[int], mapped: _Mapped
) -> tuple[list[tuple], list[tuple[int, int, str, str]]]:
    """Records cleaned a column at a time: the staged rows of the good ones, and the
    errors as (line, position, column, message)."""
    errors = []
    bad: set[int] = set()
    cells: list = [lines, *([None] * len(mapped))]
    shortest = min(map(len, records))
    for position, index, clean, column in mapped:
        if index < shortest:
            raws = list(map(itemgetter(index), records))
        else:  # a short record's missing cells are empty
            raws = [record[index] if index < len(record) else "" for record in records]
        cells[position], failed = clean(raws)
        for at, message in failed:
            errors.append((lines[at], position, column, message))
            bad.add(at)
    rows = list(zip(*cells, strict=True))
    if bad:
        rows = [row for at, row in enumerate(rows) if at not in bad]
    return rows, errors


def _read_batches(contact_import: ContactImport, size: int) -> Iterator[_Batch]:
    """The file's rows, normalised and checked, `size` at a time. Streams: one batch in memory."""
    columns = contact_import.columns
    by_field = {
        name: columns.index(column) for column, name in contact_import.mapping.items() if name
    }
    # A HubSpot date without an offset is in the portal's time zone: read it in the account's.
    zone = BillingCalendar.for_account().tz if "hubspot_created_at" in by_field else None
    mapped: _Mapped = [
        (
            position,
            by_field[name],
            column_cleaner(IMPORT_FIELDS[name], zone),
            columns[by_field[name]],
        )
        for position, name in enumerate(staged_fields(contact_import), start=1)
    ]
    csv.field_size_limit(IMPORT_FIELD_LIMIT)
    read = invalid = in_batch = 0
    rows: list[tuple] = []
    records: list[list[str]] = []  # read, not cleaned yet
    lines: list[int] = []  # their first lines
    errors: list[tuple[int, int, str, str]] = []  # (line, position, column, message)

    def clean() -> None:
        nonlocal records, lines, invalid
        if records:
            good, failed = _cleaned(records, lines, mapped)
            invalid += len(records) - len(good)
            rows.extend(good)
            errors.extend(failed)
            records, lines = [], []

    def batch() -> _Batch:
        nonlocal rows, errors, invalid, in_batch
        clean()
        errors.sort(key=itemgetter(0, 1))  # the file's order; a row's in the columns'
        done = _Batch(rows, [(line, col, text) for line, _, col, text in errors], read, invalid)
        rows, errors, invalid, in_batch = [], [], 0, 0
        return done

    looks_like_rows = _row_detector(contact_import)
    end = 1
    try:
        with _open_text(contact_import) as text:
            # strict: a quote left open at the end of the file, or a closing quote followed
            # by more text, is an error (below) instead of a value that swallows lines.
            reader = csv.reader(text, delimiter=contact_import.delimiter, strict=True)
            try:
                next(reader, None)  # the header
            except csv.Error as error:
                raise ImportFileError(f"The header cannot be read as CSV: {error}.") from error
            end = reader.line_num
            while True:
                try:
                    for record in reader:
                        line, end = end + 1, reader.line_num
                        if not record or (len(record) == 1 and not record[0].strip()):
                            continue  # a blank line
                        read += 1
                        in_batch += 1
                        if end != line and (swallowed := looks_like_rows(record, line)):
                            errors.append((line, 0, "", _swallowed_message(line, end, swallowed)))
                            invalid += 1
                        else:
                            records.append(record)
                            lines.append(line)
                            if len(records) == _CLEAN_RUN:
                                clean()
                        if in_batch >= size:
                            yield batch()
                    break
                except csv.Error as error:
                    # The reader drops the record and goes on at the next line.
                    line, end = end + 1, reader.line_num
                    read += 1
                    in_batch += 1
                    invalid += 1
                    errors.append((line, 0, "", _unreadable(error, line, end)))
                    if in_batch >= size:
                        yield batch()
    except UnicodeDecodeError as error:
        raise ImportFileError(
            f"The file is not UTF-8 text after line {end}: save it as “CSV UTF-8” and "
            "upload it again."
        ) from error
    yield batch()


def _lines(line: int, end: int) -> str:
    return f"line {line}" if line == end else f"lines {line}–{end}"


_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # the line ends the reader counts (newline="")


def _row_detector(contact_import: ContactImport) -> Callable[[list[str], int], list[int]]:
    """A check of a record that spans lines: which lines inside its quoted values read as
    rows of the file — as many fields as the header, a valid email in the email column.

    A quoted value may span lines (an address, a note). But a line that could stand as a
    row of its own is what a quote closed too late looks like: the rows after it were read
    into one value, and importing that row would lose them without a word.
    """
    width = len(contact_import.columns)
    email_at = contact_import.columns.index(
        next(column for column, name in contact_import.mapping.items() if name == "email")
    )
    email = value_cleaner(IMPORT_FIELDS["email"])
    delimiter = contact_import.delimiter

    def is_row(fields: list[str], width_after: int) -> bool:
        return (
            len(fields) + width_after == width
            and email_at < len(fields)
            and email(fields[email_at])[1] is None
        )

    def check(record: list[str], line: int) -> list[int]:
        rows, current = [], line
        for position, value in enumerate(record):
            parts = _LINE_BREAK.split(value)
            for number, part in enumerate(parts[1:], start=1):
                current += 1
                last = number == len(parts) - 1  # the line goes on after the value
                fields = next(csv.reader([part], delimiter=delimiter), [])
                if is_row(fields, len(record) - position - 1 if last else 0):
                    rows.append(current)
        return rows

    return check


def _swallowed_message(line: int, end: int, rows: list[int]) -> str:
    inside = (
        f"line {rows[0]} inside it reads as a row of its own"
        if len(rows) == 1
        else f"lines {', '.join(map(str, rows))} inside it read as rows of their own"
    )
    return (
        f"A quoted value runs over {_lines(line, end)}, and {inside}: a quote is closed too "
        f"late, or not at all. None of {_lines(line, end)} was imported; fix the quotes and "
        "import these lines again."
    )


def _unreadable(error: csv.Error, line: int, end: int) -> str:
    """A row error for a record the CSV reader refused (strict quoting)."""
    reason = str(error)
    if "unexpected end of data" in reason:
        return (
            f"A quote opened in the row on line {line} is never closed: everything from there "
            f"to the end of the file ({_lines(line, end)}) was read as one value, so none of it "
            "was imported. Close the quote and import these lines again."
        )
    if "expected after" in reason:
        return (
            f"A closing quote is followed by more text ({_lines(line, end)}): quote the "
            'whole value, and write a quote inside it twice (""). Not imported.'
        )
    if "field larger than field limit" in reason:
        return (
            f"A value is longer than {IMPORT_FIELD_LIMIT:,} characters ({_lines(line, end)}), "
            "usually a quote that is not closed where it should be. Not imported."
        )
    return f"{_lines(line, end).capitalize()} cannot be read as CSV ({reason}). Not imported."


def _fast_path() -> bool:
    return connection.vendor == "postgresql" and not FORCE_PORTABLE


def _stage_ddl(table: str) -> str:
    """The session's staging table, or (another name) a table kept for the run, UNLOGGED."""
    columns = ", ".join(
        f"{name} {'BOOLEAN' if IMPORT_FIELDS[name].kind == 'flag' else 'TEXT'}"
        + (" NOT NULL" if name == "email" else "")
        for name in IMPORT_STAGED_FIELDS
    )
    kind = "TEMPORARY" if table == STAGE_TABLE else "UNLOGGED"
    return f"CREATE {kind} TABLE {table} (line INTEGER NOT NULL, {columns})"


def stage_view(cursor, table: str) -> None:
    """`table` read under the staging table's name (a temporary view, this session only)."""
    cursor.execute(f"CREATE TEMPORARY VIEW {STAGE_TABLE} AS SELECT * FROM {table}")


def _drop_staging(cursor) -> None:
    """The session's staging table, or its view of a kept or shared table."""
    if connection.vendor == "postgresql":
        cursor.execute(
            "SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [f"pg_temp.{STAGE_TABLE}"]
        )
        found = cursor.fetchone()
        if found and found[0] == "v":
            cursor.execute(f"DROP VIEW {STAGE_TABLE}")
            return
    cursor.execute(f"DROP TABLE IF EXISTS {STAGE_TABLE}")


def _write_errors(contact_import_id: int, errors: list[tuple[int, str, str]]) -> None:
    if errors:
        ImportRowError.objects.bulk_create(
            (
                ImportRowError(
                    contact_import_id=contact_import_id,
                    line=line,
                    column=column[:200],
                    # Messages quote the bad value: one with a NUL must still be storable.
                    message=message.replace(NUL, "\\0")[:500],
                )
                for line, column, message in errors
            ),
            batch_size=IMPORT_ERROR_BATCH,
        )


@dataclass
class _Staged:
    rows: int = 0  # data rows in the file
    invalid: int = 0  # rows with an error (not imported)
    duplicates: int = 0  # rows whose email a later row repeats (not imported)
    kept: int = 0  # rows to upsert, one per email
    last_line: int = 1  # the file's last staged line (the header is line 1)


def _stage(
    contact_import: ContactImport, progress: ImportProgress | None, table: str = STAGE_TABLE
) -> _Staged:
    """Read the file into the staging table `import_stage`: one row per email (the file's
    last), row errors written afresh. Outside a transaction, others see the progress;
    the staging table lives as long as the connection (dropped by the caller).

    With another `table` (PostgreSQL), the rows go to that table, UNLOGGED, which outlives
    the session (contacts/imports/kept.py), and `import_stage` is this session's view of it.
    """
    ImportRowError.objects.filter(contact_import=contact_import).delete()
    staged = _Staged()
    copied = 0
    names = ["line", *staged_fields(contact_import)]
    columns = ", ".join(names)
    fast = _fast_path()
    total = contact_import.rows or 0
    with connection.cursor() as cursor:
        _drop_staging(cursor)
        cursor.execute(_stage_ddl(table))
        with collector_paused():  # the batches' records and rows hold no cycles
            for batch in _read_batches(contact_import, IMPORT_STAGE_BATCH):
                if batch.rows:
                    if fast:
                        with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                            for row in batch.rows:
                                copy.write_row(row)
                    else:
                        marks = ", ".join(["%s"] * len(names))
                        cursor.executemany(
                            f"INSERT INTO {table} ({columns}) VALUES ({marks})", batch.rows
                        )
                    staged.last_line = batch.rows[-1][0]
                    copied += len(batch.rows)
                _write_errors(contact_import.pk, batch.errors)
                staged.rows = batch.read
                staged.invalid += batch.invalid
                if progress:
                    progress("reading", staged.rows, max(total, staged.rows))
        staged.kept = copied - _dedupe(cursor, contact_import, table)
        if table != STAGE_TABLE:
            stage_view(cursor, table)
    staged.duplicates = staged.rows - staged.invalid - staged.kept
    return staged


def _dedupe(cursor, contact_import: ContactImport, table: str = STAGE_TABLE) -> int:
    """Keep the last row of each email and index the staging table for the upsert; the
    number of rows removed.

    The unique email index the upsert reads by is tried first: a file without
    duplicates (the usual case) costs one sort. When it fails, the earlier rows of each
    repeated email become row errors and leave the table, and the index is built again.
    """
    postgresql = connection.vendor == "postgresql"
    if postgresql:  # sort in memory, not on disk (the session's setting, reset by the caller)
        cursor.execute(f"SET maintenance_work_mem = '{IMPORT_SORT_MEMORY}'")
    unique = f"CREATE UNIQUE INDEX {table}_email ON {table} (email)"
    removed = 0
    try:
        with transaction.atomic():
            cursor.execute(unique)
    except IntegrityError:
        email_column = next(c for c, name in contact_import.mapping.items() if name == "email")
        repeated = (
            f"FROM {table} s JOIN (SELECT email, MAX(line) AS last FROM {table} "
            "GROUP BY email HAVING COUNT(*) > 1) d ON d.email = s.email WHERE s.line < d.last"
        )
        cursor.execute(
            f'INSERT INTO {ImportRowError._meta.db_table} (contact_import_id, line, "column", '
            "message) SELECT %s, s.line, %s, 'Duplicate: ' || s.email || ' is also on line ' || "
            "CAST(d.last AS TEXT) || ', the last row with this email, which is imported instead.' "
            + repeated,
            [contact_import.pk, email_column[:200]],
        )
        cursor.execute(f"DELETE FROM {table} WHERE line IN (SELECT s.line {repeated})")
        removed = cursor.rowcount
        cursor.execute(unique)
    if postgresql:
        cursor.execute("RESET maintenance_work_mem")
    with transaction.atomic():
        if postgresql:  # this transaction's setting only, whatever becomes of it
            cursor.execute(f"SET LOCAL default_statistics_target = {IMPORT_STAGE_STATISTICS}")
        cursor.execute(f"ANALYZE {table}")
    return removed
