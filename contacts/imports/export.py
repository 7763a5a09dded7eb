"""CSV export of contacts, streamed, with formulas neutralised."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import re
from collections.abc import Callable, Iterable, Iterator

from django.db.models import QuerySet
from django.utils import timezone

from contacts.models import (
    Contact,
    MarketingStatus,
)
from contacts.status.rules import is_marketing, is_pending

# Rows per export query: `WHERE id > last ORDER BY id LIMIT 2000` walks the primary key, so
# each chunk costs the same wherever it starts (no OFFSET), and memory holds one chunk.
EXPORT_CHUNK_SIZE = 2_000

logger = logging.getLogger(__name__)

# (column header, the values_list field it is read from), in the export's order.
_EXPORT_COLUMNS = [
    ("id", "pk"),
    ("email", "email"),
    ("first_name", "first_name"),
    ("last_name", "last_name"),
    ("company", "company"),
    ("phone", "phone"),
    ("lifecycle_stage", "lifecycle_stage"),
    ("lead_status", "lead_status"),
    ("contact_type", "contact_type"),
    ("unsubscribed", "unsubscribed"),
    ("hard_bounced", "hard_bounced"),
    ("lead_score", "lead_score"),
    ("last_engaged_at", "last_engaged_at"),
    ("source", "source__name"),
    ("marketing_status", "marketing_status"),  # the effective status (see below)
    ("non_marketing_from", "marketing_until"),  # only a pending downgrade's date
    ("marketing_reason_type", "marketing_reason_type"),
    ("marketing_reason_id", "marketing_reason_id"),
    ("marketing_reason_name", "marketing_reason_name"),
    ("created_at", "created_at"),
]
EXPORT_HEADER = [header for header, _ in _EXPORT_COLUMNS]
_EXPORT_FIELDS = [field for _, field in _EXPORT_COLUMNS]
# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets
# (OWASP "CSV injection"); tab and carriage return start one in some of them too.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# An international phone number ("+46 70 000 0001", "+1 (555) 010-2030") starts with "+"
# but holds only digits, spaces, brackets and hyphens: at worst a spreadsheet reads it as
# arithmetic, never as a function call, so it is exported as it is and imports back the same.
PHONE_NUMBER = re.compile(r"\+[\d ()\-]*\d[\d ()\-]*")


# The last line of an export an error stopped: not a contact row (its first cell is no id),
# and it says what happened.
EXPORT_INCOMPLETE = (
    "# INCOMPLETE EXPORT: an error stopped it before the end; rows are missing from this "
    "file. Run the export again.\r\n"
)


def csv_safe(value: str) -> str:
    """A text cell a spreadsheet will show as text: a leading quote defuses a formula."""
    if not value.startswith(FORMULA_PREFIXES) or PHONE_NUMBER.fullmatch(value):
        return value
    return "'" + value


def _text(value: str) -> str:
    return csv_safe(value) if value else ""


def _instant(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).isoformat() if value is not None else ""


def contacts_export_rows(
    *, contacts: QuerySet[Contact], at: dt.datetime | None = None
) -> Iterator[list[str]]:
    """The export's rows (header first), chunk by chunk in id order: constant memory.

    Keyset pagination: each chunk is `id > <last id of the previous chunk>`, never an
    OFFSET, and never a list of the whole queryset. `marketing_status` is the effective
    status at `at` (a passed pending date reads non-marketing), `non_marketing_from` the
    pending downgrade's date. Text cells are made formula-safe (`csv_safe`). Each row is
    unpacked and formatted in one expression: this loop is the export's hot path.
    """
    at = at or timezone.now()
    marketing, non_marketing = MarketingStatus.MARKETING.value, MarketingStatus.NON_MARKETING.value
    yield list(EXPORT_HEADER)
    rows = contacts.order_by("pk").values_list(*_EXPORT_FIELDS)
    last = 0
    while True:
        chunk = list(rows.filter(pk__gt=last)[:EXPORT_CHUNK_SIZE])
        if not chunk:
            return
        for (
            pk,
            email,
            first_name,
            last_name,
            company,
            phone,
            stage,
            lead_status,
            contact_type,
            unsubscribed,
            hard_bounced,
            lead_score,
            last_engaged_at,
            source,
            status,
            until,
            reason_type,
            reason_id,
            reason_name,
            created_at,
        ) in chunk:
            pending = is_pending(status, until, at)
            billable = is_marketing(status, until, at)
            yield [
                str(pk),
                _text(email),
                _text(first_name),
                _text(last_name),
                _text(company),
                _text(phone),
                _text(stage),
                _text(lead_status),
                _text(contact_type),
                "true" if unsubscribed else "false",
                "true" if hard_bounced else "false",
                str(lead_score),
                _instant(last_engaged_at),
                _text(source),
                marketing if billable else non_marketing,
                _instant(until) if pending else "",
                _text(reason_type),
                _text(reason_id),
                _text(reason_name),
                _instant(created_at),
            ]
        last = chunk[-1][0]
        if len(chunk) < EXPORT_CHUNK_SIZE:
            return


def contacts_export_csv(
    *,
    contacts: QuerySet[Contact],
    at: dt.datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """The export as CSV text, one piece per chunk (for StreamingHttpResponse or a file).

    The first piece is the header alone, the second the first chunk's rows: a caller that
    reads two pieces has run the query once (contacts.imports.views).
    `progress(n)` is told after each piece how many contact rows it held.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    rows = 0
    for count, row in enumerate(contacts_export_rows(contacts=contacts, at=at)):
        writer.writerow(row)
        rows += count > 0  # not the header
        if count % EXPORT_CHUNK_SIZE == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if progress and rows:
                progress(rows)
            rows = 0
    if buffer.tell():
        yield buffer.getvalue()
        if progress and rows:
            progress(rows)


def export_marked_incomplete(pieces: Iterable[str]) -> Iterator[str]:
    """`pieces`, and if an error stops them, one last line saying the file is incomplete
    (`EXPORT_INCOMPLETE`) before the error goes on. A streamed HTTP response has answered
    200 already and a plain HTTP/1.0 stream cannot say it stopped short: the line can."""
    try:
        yield from pieces
    except Exception:
        logger.exception("A contact export stopped before its end.")
        yield EXPORT_INCOMPLETE
        raise
