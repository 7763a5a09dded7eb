"""CSV import: the fields a column can fill, reading a file's head and mapping its columns."""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass, field

from django.conf import settings

from contacts.hubspot.mapping import EXPORT_LABELS
from contacts.imports.models import ImportFormat
from contacts.models import (
    ContactType,
    LeadStatus,
    LifecycleStage,
    Source,
    SourceKind,
)
from contacts.status.results import StatusError
from contacts.status.rules import can_change_marketing_status
from crm.inputs import NUL
from crm.rows import row_get_or_create

#
# A CSV import (DESIGN §1.3 "import") goes: upload
# (`contact_import_create`: size limit, hash, header, columns mapped by their
# aliases) → mapping (`contact_import_configure`) → preview (`contact_import_preview`:
# counts and the billing impact, nothing written to contacts) → commit
# (`contact_import_commit`: queues the background job) → run (`contact_import_run`).
#
# Every pass streams the file: one cheap Python pass normalises and validates each row
# (the same rules on every database) and writes the good rows to a temporary staging
# table — COPY on PostgreSQL, executemany elsewhere — and the bad ones to
# `ImportRowError`. Duplicates are resolved in SQL (the last row of an email wins), so
# memory stays flat whatever the file's size. On PostgreSQL the preview's pass is the only
# one: its staged rows are kept for the run (contacts/imports/kept.py). Then contacts are
# upserted by email:
# on PostgreSQL one INSERT … ON CONFLICT (email) DO UPDATE … WHERE changed statement
# per IMPORT_UPSERT_BATCH staged rows; elsewhere chunks of bulk_create/bulk_update.
# New contacts are inserted non-marketing with the reason `contacts_creation_policy`
# gives the import (asked once per import: source type "import", id = the import's id,
# name = the file's name). Existing contacts get the row's non-empty values only; their
# status and reason columns are never touched by the upsert: a marketing import makes its
# contacts marketing afterwards with one guarded `contacts_set_marketing` call (the same
# reason on the ledger), so nothing is ever downgraded.

IMPORT_HEAD_BYTES = 64 * 1024  # read to find the header and the delimiter
IMPORT_DEFAULT_SOURCE = "CSV import"


class ImportFileError(StatusError):
    """The file or the mapping cannot be imported; the message says why, for the user."""


class ImportNotAllowed(StatusError):
    """The user lacks a permission the import needs (a marketing import)."""


class ImportStateError(StatusError):
    """The import is not in a state that allows this step."""


def _key(value: str) -> str:
    """A header or value reduced to its letters and digits, lower-cased ("E-mail" → "email")."""
    return re.sub(r"[^a-z0-9]", "", value.lower())


def _choice_table(choices: type, *synonyms: tuple[str, str]) -> dict[str, str]:
    table = {}
    for value, label in choices.choices:
        table[_key(value)] = value
        table[_key(label)] = value
    table.update({_key(alias): value for alias, value in synonyms})
    return table


@dataclass(frozen=True)
class ImportField:
    name: str
    label: str
    kind: str  # "email", "text", "choice", "flag"; HubSpot's: "record_id", "status", "instant"
    aliases: tuple[str, ...] = ()
    max_length: int = 0
    choices: dict[str, str] = field(default_factory=dict)
    # False: staged for the HubSpot migration (contacts/imports/hubspot.py), not a contact
    # column; such a field is offered only for a HubSpot export.
    contact: bool = True


# The contact fields a column can fill, and the header names (HubSpot's export's among
# them) that map to each without asking. Headers are compared by `_key`.
IMPORT_FIELDS: dict[str, ImportField] = {
    f.name: f
    for f in (
        ImportField(
            "email",
            "Email",
            "email",
            ("email", "e-mail", "email address", "e-mail address", "mail", "work email"),
            max_length=254,
        ),
        ImportField(
            "first_name", "First name", "text", ("first name", "firstname", "given name"), 100
        ),
        ImportField(
            "last_name",
            "Last name",
            "text",
            ("last name", "lastname", "surname", "family name"),
            100,
        ),
        ImportField(
            "company",
            "Company",
            "text",
            ("company", "company name", "organization", "organisation", "associated company"),
            200,
        ),
        ImportField(
            "phone",
            "Phone",
            "text",
            ("phone", "phone number", "telephone", "mobile phone number", "mobile"),
            40,
        ),
        ImportField(
            "lifecycle_stage",
            "Lifecycle stage",
            "choice",
            ("lifecycle stage", "lifecyclestage", "lifecycle"),
            choices=_choice_table(LifecycleStage),
        ),
        ImportField(
            "lead_status",
            "Lead status",
            "choice",
            ("lead status", "hs_lead_status"),
            choices=_choice_table(LeadStatus),
        ),
        ImportField(
            "contact_type",
            "Contact type",
            "choice",
            ("contact type", "type"),
            choices=_choice_table(ContactType),
        ),
        ImportField(
            "unsubscribed",
            "Unsubscribed (yes only)",
            "flag",
            ("unsubscribed", "unsubscribed from all email", "opted out of all email"),
        ),
        ImportField("hard_bounced", "Hard bounced (yes only)", "flag", ("hard bounced", "bounced")),
        # A HubSpot export's own columns, mapped by contacts.hubspot.mapping's labels.
        ImportField("hubspot_record_id", "HubSpot record ID", "record_id", contact=False),
        ImportField("hubspot_marketing", "HubSpot marketing status", "status", contact=False),
        ImportField(
            "hubspot_until_renewal",
            "HubSpot: non-marketing at the next update (yes only)",
            "flag",
            contact=False,
        ),
        ImportField("hubspot_created_at", "HubSpot create date", "instant", contact=False),
    )
}
IMPORT_STAGED_FIELDS = list(IMPORT_FIELDS)  # email first, then the rest, in this order
# The staged fields that are contact columns (the upsert writes these and no others).
IMPORT_CONTACT_FIELDS = [n for n, f in IMPORT_FIELDS.items() if f.contact]
_TEXT_FIELDS = [n for n in IMPORT_CONTACT_FIELDS if IMPORT_FIELDS[n].kind in ("text", "choice")]
_FLAG_FIELDS = [n for n in IMPORT_CONTACT_FIELDS if IMPORT_FIELDS[n].kind == "flag"]
_INSERT_DEFAULTS = {
    "lifecycle_stage": LifecycleStage.LEAD.value,
    "contact_type": ContactType.PROSPECT.value,
}
_HEADER_ALIASES = {
    _key(alias): name
    for name, f in IMPORT_FIELDS.items()
    if f.contact
    for alias in (name, *f.aliases)
}
# A HubSpot export's columns by their labels (the property table's), then the usual aliases.
_HUBSPOT_HEADERS = {**_HEADER_ALIASES, **{_key(k): v for k, v in EXPORT_LABELS.items()}}
# HubSpot's contacts export always starts with these two columns' labels.
_HUBSPOT_SIGNATURE = frozenset({_key("Record ID"), _key("Email")})
HUBSPOT_STATUS_FIELDS = frozenset({"hubspot_marketing", "hubspot_until_renewal"})
_TRUE = frozenset({"true", "yes", "y", "1", "t", "x"})
_FALSE = frozenset({"false", "no", "n", "0", "f", ""})
# Django's EmailValidator's patterns (its DomainNameValidator's for the domain), ASCII
# only, for a plain dot-atom address: a row that passes needs no more work; anything else
# is asked of validate_email itself (IDN, literals, quoted local parts). The top-level
# label is letters and hyphens, or punycode ("xn--…"), never digits. Written possessively
# (`++`, `{…}+`): no part of an address can give characters back to the next (a label
# stops at a dot, the local part at the @), so the same addresses match without
# backtracking, in about half the time (tests/contacts/imports/test_cleaning.py holds
# the pattern to the validator).
_EMAIL_FAST = re.compile(
    r"[-!#$%&'*+/=?^_`{}|~0-9a-z]++(?:\.[-!#$%&'*+/=?^_`{}|~0-9a-z]++)*+"
    r"@(?:(?!-)[a-z0-9-]{1,63}+(?<!-)\.)++"
    r"(?!-)(?:[a-z-]{2,63}+|xn--[a-z0-9]{1,59}+)(?<!-)"
)


def import_max_bytes() -> int:
    return settings.IMPORT_MAX_BYTES


def _size_text(size: int) -> str:
    return f"{size / 1_000_000:,.1f} MB"


def import_check_size(size: int) -> None:
    limit = import_max_bytes()
    if size > limit:
        raise ImportFileError(
            f"The file is {_size_text(size)}; an import takes at most {_size_text(limit)} "
            "(setting IMPORT_MAX_BYTES). Split it into smaller files."
        )


@dataclass(frozen=True)
class CsvHead:
    delimiter: str
    columns: list[str]


def _read_head(head: bytes) -> CsvHead:
    """The delimiter and header of a file from its first bytes (UTF-8, BOM or not)."""
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError as error:
        raise ImportFileError(
            "The file is not UTF-8 text: save it as “CSV UTF-8” (comma or semicolon "
            f"separated) and upload it again ({error.reason} at byte {error.start})."
        ) from error
    first_line = text.split("\n", 1)[0]
    if not first_line.strip():
        raise ImportFileError("The file is empty: its first line should name the columns.")
    if "\n" not in text and len(head) >= IMPORT_HEAD_BYTES:
        raise ImportFileError("The first line is too long to be a header of column names.")
    # Semicolons when the header has more of them than commas (Excel in many locales).
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    columns = next(csv.reader(io.StringIO(first_line), delimiter=delimiter), [])
    columns = [c.strip() for c in columns]
    seen: dict[str, int] = {}
    for number, name in enumerate(columns, start=1):
        if NUL in name:
            raise ImportFileError(
                f"The header's column {number} contains a NUL character (\\0); remove it and "
                "upload the file again."
            )
        if name and name in seen:
            raise ImportFileError(
                f"The header names the column “{name}” twice (columns {seen[name]} and "
                f"{number}); rename one and upload the file again."
            )
        seen[name] = number
    if not any(columns):
        raise ImportFileError("The first line should name the columns; it is empty.")
    return CsvHead(delimiter=delimiter, columns=columns)


def import_detect_format(columns: list[str]) -> str:
    """HubSpot's contacts export when the header has its "Record ID" and "Email" columns."""
    keys = {_key(column) for column in columns}
    return ImportFormat.HUBSPOT if keys >= _HUBSPOT_SIGNATURE else ImportFormat.CSV


def import_detect_mapping(columns: list[str], file_format: str = "csv") -> dict[str, str]:
    """Each column's field by its header's alias ("E-mail" → email), or "" (ignored); for a
    HubSpot export, by the property table's labels first. A field goes to the first column
    that names it."""
    aliases = _HUBSPOT_HEADERS if file_format == ImportFormat.HUBSPOT else _HEADER_ALIASES
    mapping, taken = {}, set()
    for column in columns:
        if not column:
            continue
        name = aliases.get(_key(column), "")
        if name in taken:
            name = ""
        taken.add(name)
        mapping[column] = name
    return mapping


def import_fields(file_format: str) -> dict[str, ImportField]:
    """The fields a column of a file of this format can fill."""
    if file_format == ImportFormat.HUBSPOT:
        return IMPORT_FIELDS
    return {name: spec for name, spec in IMPORT_FIELDS.items() if spec.contact}


def import_resolve_mapping(
    columns: list[str], given: dict | None, file_format: str = "csv"
) -> dict[str, str]:
    """The detected mapping with the caller's choices on top, checked.

    `given` maps column names to field names ("" or None: ignore the column). A field the
    caller maps is taken away from the column its alias had given it to.
    """
    mapping = import_detect_mapping(columns, file_format)
    allowed = import_fields(file_format)
    given = given or {}
    if not isinstance(given, dict):
        raise ImportFileError('The mapping must be an object: {"column name": "field", …}.')
    problems = []
    for column, name in given.items():
        name = (name or "").strip() if isinstance(name, str) or name is None else name
        if column not in mapping:
            problems.append(
                f"There is no column “{column}” in the file (its columns: "
                + ", ".join(f"“{c}”" for c in columns if c)
                + ")."
            )
        elif not isinstance(name, str) or (name and name not in allowed):
            only_hubspot = isinstance(name, str) and name in IMPORT_FIELDS
            problems.append(
                f"“{name}” (for the column “{column}”) is not a field "
                + (
                    "a CSV file can fill: it is read only from a HubSpot export (format “hubspot”)"
                    if only_hubspot
                    else "an import can fill"
                )
                + "; use one of "
                + ", ".join(allowed)
                + ", or an empty value to ignore it."
            )
    if problems:
        raise ImportFileError(" ".join(problems))
    chosen = {column: (name or "").strip() for column, name in given.items()}
    for column in mapping:
        if column in chosen:
            mapping[column] = chosen[column]
        elif mapping[column] and mapping[column] in chosen.values():
            mapping[column] = ""
    import_check_mapping(mapping)
    return mapping


def import_check_mapping(mapping: dict[str, str]) -> None:
    by_field: dict[str, list[str]] = {}
    for column, name in mapping.items():
        if name:
            by_field.setdefault(name, []).append(column)
    twice = {name: cols for name, cols in by_field.items() if len(cols) > 1}
    if twice:
        raise ImportFileError(
            " ".join(
                f"The field {name} is mapped from more than one column ("
                + ", ".join(f"“{c}”" for c in cols)
                + "); keep one."
                for name, cols in twice.items()
            )
        )
    if "email" not in by_field:
        raise ImportFileError(
            "No column is mapped to email: contacts are matched by email, so one column must "
            "hold it (map it, e.g. “Email”)."
        )


def import_keeps_statuses(mapping: dict[str, str]) -> bool:
    """Whether the mapping takes each contact's marketing status from the file (HubSpot's)."""
    return any(name in HUBSPOT_STATUS_FIELDS for name in mapping.values())


def _check_marketing_allowed(actor, marketing: bool, mapping: dict[str, str] | None = None) -> None:
    """A marketing import, or one keeping a HubSpot export's statuses, needs
    contacts.change_marketing_status. No actor: an operator's command, trusted like the
    other management commands."""
    if actor is None or can_change_marketing_status(actor):
        return
    if marketing:
        raise ImportNotAllowed(
            "Setting the contacts of an import as marketing needs the permission "
            "contacts.change_marketing_status; import without “marketing”, or ask someone "
            "who has it."
        )
    if mapping and import_keeps_statuses(mapping):
        raise ImportNotAllowed(
            "Keeping the marketing statuses of a HubSpot export needs the permission "
            "contacts.change_marketing_status; ignore its “Marketing contact status” column "
            "to import every contact as non-marketing, or ask someone who has it."
        )


def _check_status_choice(marketing: bool, mapping: dict[str, str]) -> None:
    """One import decides statuses one way: "set all as marketing", or the file's own."""
    if marketing and import_keeps_statuses(mapping):
        raise ImportFileError(
            "This HubSpot export keeps each contact's own marketing status, so “set all as "
            "marketing” does not apply: leave it off, or ignore the “Marketing contact status” "
            "column to set them all as marketing."
        )


def import_source_default() -> Source:
    return row_get_or_create(
        Source,
        lookup={"name": IMPORT_DEFAULT_SOURCE},
        defaults={"kind": SourceKind.IMPORT, "default_marketing": False},
    )[0]


def _check_import_source(source: Source) -> None:
    if source.kind != SourceKind.IMPORT:
        raise ImportFileError(
            f"The source “{source.name}” is a {source.get_kind_display()} source; an import "
            "records a source of the kind “Import”."
        )
