"""A HubSpot export brought in as a migration: its record ids and its marketing statuses.

The import's usual passes stage the file and upsert its contacts (new ones non-marketing,
with the import as their reason). For a HubSpot export this module adds, in sets over the
staging table, whatever the database:

- the **records**: a row whose "Record ID" is repeated further down the file, or already
  belongs to a contact with another email, is a row error; after the upsert each contact's
  `HubSpotRecord` (record id, HubSpot's create date) is written, so an export imported
  again finds the same contacts and writes nothing new;
- the **statuses**, when the export's "Marketing contact status" is kept (which needs
  `contacts.change_marketing_status`): a contact the file says is marketing becomes
  marketing; one it says is "set to non-marketing at the next update" becomes marketing
  and its downgrade is scheduled for the next update date; one it says is non-marketing
  stays non-marketing. Existing contacts are only ever upgraded (an import never takes a
  status away): one already marketing here keeps its status. Both changes go through the
  status service with the import as the source ("Migrated from HubSpot: <file>"), the
  upgrade guarded like any import's.
"""

from __future__ import annotations

import datetime as dt

from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL

from contacts.imports.hubspot import FILE_MARKETING, FILE_NON_MARKETING, FILE_PENDING
from contacts.imports.models import (
    ContactImport,
    HubSpotRecord,
    ImportedContact,
    ImportFormat,
    ImportRowError,
)
from contacts.imports.parsing import import_keeps_statuses
from contacts.imports.staging import STAGE_TABLE, _Staged
from contacts.models import Contact
from contacts.status.results import SET_MARKETING, StatusPreview, StatusSource
from contacts.status.rules import marketing_sql, not_marketing_q
from contacts.status.services import contacts_set_non_marketing, contacts_status_preview
from contacts.status.sql import CONTACT_TABLE

HUBSPOT_REASON = "Migrated from HubSpot"

# The file's status of a staged row: "pending" when the export said so in either column.
_FILE_STATUS = (
    f"(CASE WHEN s.hubspot_until_renewal THEN '{FILE_PENDING}' ELSE s.hubspot_marketing END)"
)


def hubspot_reason_name(file_name: str) -> str:
    """The name the ledger and the contacts record for a HubSpot export's import."""
    return f"{HUBSPOT_REASON}: {file_name}"[:200]


def hubspot_keeps_statuses(contact_import: ContactImport) -> bool:
    return contact_import.format == ImportFormat.HUBSPOT and import_keeps_statuses(
        contact_import.mapping
    )


def _maps(contact_import: ContactImport, name: str) -> bool:
    return contact_import.format == ImportFormat.HUBSPOT and name in contact_import.mapping.values()


def _column_of(contact_import: ContactImport, name: str) -> str:
    return next(c for c, field in contact_import.mapping.items() if field == name)[:200]


def _instant_sql(expression: str) -> str:
    """A staged "YYYY-MM-DD HH:MM:SS" (UTC) as the database stores a datetime."""
    if connection.vendor == "postgresql":
        return f"(CAST({expression} AS timestamp) AT TIME ZONE 'UTC')"
    return expression  # SQLite: Django stores UTC datetimes as this very text


def hubspot_check_records(contact_import: ContactImport, staged: _Staged) -> None:
    """Row errors for the record ids a contact cannot take; those rows leave the staging
    table (and count as invalid). Run after the staging pass, before anything is counted."""
    if not _maps(contact_import, "hubspot_record_id"):
        return
    column = _column_of(contact_import, "hubspot_record_id")
    errors = ImportRowError._meta.db_table
    records, contacts = HubSpotRecord._meta.db_table, CONTACT_TABLE
    repeated = (
        f"FROM {STAGE_TABLE} s JOIN (SELECT hubspot_record_id AS record, MAX(line) AS last "
        f"FROM {STAGE_TABLE} WHERE hubspot_record_id IS NOT NULL GROUP BY hubspot_record_id "
        "HAVING COUNT(*) > 1) d ON d.record = s.hubspot_record_id WHERE s.line < d.last"
    )
    taken = (
        f"FROM {STAGE_TABLE} s JOIN {records} r ON r.record_id = s.hubspot_record_id "
        f"JOIN {contacts} c ON c.id = r.contact_id WHERE c.email <> s.email"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f'INSERT INTO {errors} (contact_import_id, line, "column", message) '
            "SELECT %s, s.line, %s, 'Record ID ' || s.hubspot_record_id || ' is also on line ' "
            "|| CAST(d.last AS TEXT) || ': one HubSpot record is one contact, and the last row "
            "with it is imported instead.' " + repeated,
            [contact_import.pk, column],
        )
        cursor.execute(
            f'INSERT INTO {errors} (contact_import_id, line, "column", message) '
            "SELECT %s, s.line, %s, 'Record ID ' || s.hubspot_record_id || ' was imported "
            "before as ' || c.email || ', not ' || s.email || ': change the email of that "
            "contact first (or remove the record ID from this row) and import this line "
            "again. Not imported.' " + taken,
            [contact_import.pk, column],
        )
        cursor.execute(
            f"DELETE FROM {STAGE_TABLE} WHERE line IN (SELECT s.line {repeated}) "
            f"OR line IN (SELECT s.line {taken})"
        )
        removed = max(cursor.rowcount, 0)
    staged.invalid += removed
    staged.kept -= removed


def hubspot_write_records(contact_import: ContactImport) -> None:
    """After the upsert: each staged contact's HubSpot record (id and create date). A
    contact HubSpot now knows under another record id is linked to the new one."""
    if not _maps(contact_import, "hubspot_record_id"):
        return
    records = HubSpotRecord._meta.db_table
    created = _instant_sql("s.hubspot_created_at")
    linked = (
        f"FROM {STAGE_TABLE} s JOIN {CONTACT_TABLE} c ON c.email = s.email "
        "WHERE s.hubspot_record_id IS NOT NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {records} WHERE contact_id IN (SELECT c.id {linked} "
            f"AND s.hubspot_record_id <> {records}.record_id)"
        )
        cursor.execute(
            f"UPDATE {records} SET hubspot_created_at = (SELECT {created} {linked} "
            f"AND c.id = {records}.contact_id) WHERE contact_id IN (SELECT c.id {linked} "
            f"AND s.hubspot_created_at IS NOT NULL AND ({records}.hubspot_created_at IS NULL "
            f"OR {records}.hubspot_created_at <> {created}))"
        )
        cursor.execute(
            f"INSERT INTO {records} (contact_id, record_id, hubspot_created_at, "
            f"contact_import_id) SELECT c.id, s.hubspot_record_id, {created}, %s {linked} "
            f"AND NOT EXISTS (SELECT 1 FROM {records} r WHERE r.contact_id = c.id)",
            [contact_import.pk],
        )


def hubspot_record_members(contact_import: ContactImport, now: dt.datetime) -> None:
    """The contacts whose file status the import applies, into ImportedContact (once each):
    every row the file says is marketing, and the rows it says are pending whose contact is
    not marketing here now (`pending`: its downgrade is scheduled once it is marketing)."""
    table = ImportedContact._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (contact_import_id, contact_id, pending) "
            f"SELECT %s, c.id, {_FILE_STATUS} = '{FILE_PENDING}' "
            f"FROM {STAGE_TABLE} s JOIN {CONTACT_TABLE} c ON c.email = s.email "
            f"WHERE ({_FILE_STATUS} = '{FILE_MARKETING}' OR ({_FILE_STATUS} = '{FILE_PENDING}' "
            f"AND NOT {marketing_sql(status='c.marketing_status', until='c.marketing_until')})) "
            f"AND NOT EXISTS (SELECT 1 FROM {table} m "
            "WHERE m.contact_import_id = %s AND m.contact_id = c.id)",
            [contact_import.pk, now, contact_import.pk],
        )


def hubspot_pending_part(
    contact_import: ContactImport, source: StatusSource, actor
) -> dict[str, int]:
    """Schedule the downgrades the file asked for ("set to non-marketing at the next
    update") of the contacts the import made marketing: one call of the status service,
    replayed by its key when the run is repeated."""
    members = ImportedContact.objects.filter(contact_import_id=contact_import.pk, pending=True)
    if not members.exists():
        return {"scheduled": 0}
    result = contacts_set_non_marketing(
        contacts=Contact.objects.filter(pk__in=members.values("contact_id")),
        source=source,
        actor=actor,
        idempotency_key=f"import:{contact_import.pk}:pending",
    )
    return {"scheduled": result.scheduled}


def _rows_saying(*statuses: str) -> RawSQL:
    marks = ", ".join(["%s"] * len(statuses))
    return RawSQL(
        f"SELECT s.email FROM {STAGE_TABLE} s WHERE {_FILE_STATUS} IN ({marks})", list(statuses)
    )


def hubspot_preview(contact_import: ContactImport, now: dt.datetime) -> tuple[dict, StatusPreview]:
    """What the file says (rows per status) and the status service's preview of making
    marketing what it applies: existing contacts it would upgrade, plus the new rows it
    says are marketing (counted through `additional`)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_FILE_STATUS}, COUNT(*), COUNT(c.id) FROM {STAGE_TABLE} s "
            f"LEFT JOIN {CONTACT_TABLE} c ON c.email = s.email GROUP BY {_FILE_STATUS}"
        )
        rows = {status: (int(total), int(existing)) for status, total, existing in cursor}
    said = {
        "marketing": rows.get(FILE_MARKETING, (0, 0))[0],
        "pending": rows.get(FILE_PENDING, (0, 0))[0],
        "non_marketing": rows.get(FILE_NON_MARKETING, (0, 0))[0],
        "unset": rows.get(None, (0, 0))[0],
    }
    new_marketing = sum(
        total - existing
        for status, (total, existing) in rows.items()
        if status in (FILE_MARKETING, FILE_PENDING)
    )
    existing: QuerySet = Contact.objects.filter(
        Q(email__in=_rows_saying(FILE_MARKETING))
        | (Q(email__in=_rows_saying(FILE_PENDING)) & not_marketing_q(now))
    )
    preview = contacts_status_preview(
        contacts=existing, operation=SET_MARKETING, at=now, additional=new_marketing
    )
    pending_new = rows.get(FILE_PENDING, (0, 0))
    scheduled = (pending_new[0] - pending_new[1]) + Contact.objects.filter(
        Q(email__in=_rows_saying(FILE_PENDING)) & not_marketing_q(now)
    ).count()
    said["would_schedule"] = scheduled
    return said, preview
