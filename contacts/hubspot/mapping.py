"""HubSpot's contact properties and Marketable's fields: the one table between them.

Every HubSpot-compatible read, write, search and property listing goes through
`PROPERTIES`: a property's HubSpot name, its HubSpot shape (type, field type, group,
options), how it is read from a contact, the Marketable field it writes (none: read-only),
the criteria field it is searched by (none: not searchable) and the column it sorts on.

Values are in HubSpot's formats: booleans as "true"/"false", instants ISO 8601 in UTC with
milliseconds and a `Z`, enumerations as HubSpot's internal values where they differ from
ours (lifecycle stage `marketingqualifiedlead` is our `mql`, lead status `OPEN` our
`open`). An empty text field reads as null, as an unset HubSpot property does.

The marketing properties (`hs_marketable_*`) read the contact's *effective* status at the
request's instant (contacts.status.rules). Unlike HubSpot, `hs_marketable_status` is
writable here; its writes go through the status service, never through a field.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from contacts.criteria.properties import HUBSPOT_LIFECYCLE_VALUES, HUBSPOT_SOURCE_VALUES
from contacts.models import (
    Contact,
    LeadStatus,
    LifecycleStage,
    SourceKind,
    StatusSourceType,
)
from contacts.status.rules import is_marketing, is_pending

TRUE, FALSE = "true", "false"

# HubSpot's property types and field types (the "type" and "fieldType" of a property).
STRING, NUMBER, DATETIME, ENUMERATION = "string", "number", "datetime", "enumeration"
TEXT, PHONE, NUMBER_FIELD, DATE_FIELD = "text", "phonenumber", "number", "date"
SELECT, RADIO, CHECKBOX = "select", "radio", "booleancheckbox"

# HubSpot's property groups.
CONTACT_INFORMATION = "contactinformation"
EMAIL_INFORMATION = "emailinformation"
ANALYTICS_INFORMATION = "analyticsinformation"


@dataclass(frozen=True)
class Option:
    """One value of an enumeration: HubSpot's internal value, its label and ours.

    A hidden option is accepted in writes and searches but never read back (another
    HubSpot value of the same meaning is).
    """

    value: str
    label: str
    ours: Any
    hidden: bool = False


class PropertyValueError(ValueError):
    """A value a property does not accept; `code` is HubSpot's error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class HubSpotProperty:
    """One HubSpot contact property and where it lives in Marketable."""

    name: str
    label: str
    type: str
    field_type: str
    group: str
    description: str
    read: Callable[[Contact, dt.datetime], str | None]
    field: str | None = None  # the contact field a write sets; None and not status: read-only
    status: bool = False  # hs_marketable_status: written through the status service
    criteria: str | None = None  # the criteria field a search filter compiles to
    sort: str | None = None  # the column results sort on
    options: tuple[Option, ...] = ()
    unique: bool = False
    calculated: bool = False
    blank_allowed: bool = True  # whether "" (unset) is a value a write may give
    # The CSV import field a column of HubSpot's contacts export fills (the column is named
    # by `label`, or one of `export_labels`); None: the import ignores the column.
    import_field: str | None = None
    export_labels: tuple[str, ...] = ()

    @property
    def writable(self) -> bool:
        return self.field is not None or self.status

    def option(self, value: str) -> Option | None:
        """The option a HubSpot value names (any case), or None."""
        wanted = value.strip().lower()
        return next((o for o in self.options if o.value.lower() == wanted), None)

    def hubspot_value(self, ours: Any) -> str | None:
        """Our stored value as this enumeration's HubSpot value (None: unset)."""
        for option in self.options:
            if option.ours == ours and not option.hidden:
                return option.value
        return None


def hubspot_datetime(value: dt.datetime | None) -> str | None:
    """An instant as HubSpot writes it: UTC, milliseconds, `Z`."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _boolean(value: bool) -> str:
    return TRUE if value else FALSE


def _text(name: str) -> Callable[[Contact, dt.datetime], str | None]:
    return lambda contact, now: getattr(contact, name) or None


def _enum(prop_name: str, attribute: Callable[[Contact], Any]):
    return lambda contact, now: PROPERTIES[prop_name].hubspot_value(attribute(contact))


def _choices(choices, value_of: Callable[[str], str]) -> tuple[Option, ...]:
    return tuple(Option(value_of(value), str(label), value) for value, label in choices)


_LIFECYCLE_HUBSPOT = {ours: theirs for theirs, ours in HUBSPOT_LIFECYCLE_VALUES.items()}
LIFECYCLE_OPTIONS = _choices(
    LifecycleStage.choices, lambda value: _LIFECYCLE_HUBSPOT.get(value, value)
)
LEAD_STATUS_OPTIONS = _choices(LeadStatus.choices, str.upper)
BOOLEAN_OPTIONS = (Option(TRUE, "Yes", True), Option(FALSE, "No", False))
MARKETING_OPTIONS = (
    Option(TRUE, "Marketing contact", True),
    Option(FALSE, "Non-marketing contact", False),
)
# A source kind reads as HubSpot's object-source value where exactly one means it (CRM_UI,
# CONVERSATIONS…), else as our kind in capitals; every HubSpot alias is accepted on input.
_SOURCE_ALIASES: dict[str, list[str]] = {}
for _alias, _kind in HUBSPOT_SOURCE_VALUES.items():
    _SOURCE_ALIASES.setdefault(_kind, []).append(_alias.upper())
SOURCE_OPTIONS = tuple(
    option
    for kind, label in SourceKind.choices
    for option in (
        Option(
            _SOURCE_ALIASES[kind][0] if len(_SOURCE_ALIASES.get(kind, ())) == 1 else kind.upper(),
            str(label),
            kind,
        ),
        *(
            Option(alias, str(label), kind, hidden=True)
            for alias in _SOURCE_ALIASES.get(kind, ())
            if len(_SOURCE_ALIASES[kind]) > 1
        ),
    )
)
REASON_OPTIONS = _choices(StatusSourceType.choices, str.upper)
# Marketable records that an address hard-bounced, not why.
BOUNCE_OPTIONS = (Option("OTHER", "Hard bounced (reason not recorded)", True),)


_PROPERTY_LIST: tuple[HubSpotProperty, ...] = (
    HubSpotProperty(
        "hs_object_id",
        "Record ID",
        NUMBER,
        NUMBER_FIELD,
        CONTACT_INFORMATION,
        "The contact's id.",
        lambda contact, now: str(contact.pk),
        criteria="contact_id",
        sort="id",
        unique=True,
        calculated=True,
        import_field="hubspot_record_id",
    ),
    HubSpotProperty(
        "email",
        "Email",
        STRING,
        TEXT,
        CONTACT_INFORMATION,
        "The contact's email address (unique; stored lower-cased).",
        lambda contact, now: contact.email,
        field="email",
        criteria="email",
        sort="email",
        unique=True,
        blank_allowed=False,
        import_field="email",
    ),
    HubSpotProperty(
        "firstname",
        "First Name",
        STRING,
        TEXT,
        CONTACT_INFORMATION,
        "The contact's first name.",
        _text("first_name"),
        field="first_name",
        criteria="first_name",
        sort="first_name",
        import_field="first_name",
    ),
    HubSpotProperty(
        "lastname",
        "Last Name",
        STRING,
        TEXT,
        CONTACT_INFORMATION,
        "The contact's last name.",
        _text("last_name"),
        field="last_name",
        criteria="last_name",
        sort="last_name",
        import_field="last_name",
    ),
    HubSpotProperty(
        "company",
        "Company Name",
        STRING,
        TEXT,
        CONTACT_INFORMATION,
        "The contact's company.",
        _text("company"),
        field="company",
        criteria="company",
        sort="company",
        import_field="company",
    ),
    HubSpotProperty(
        "phone",
        "Phone Number",
        STRING,
        PHONE,
        CONTACT_INFORMATION,
        "The contact's phone number.",
        _text("phone"),
        field="phone",
        criteria="phone",
        sort="phone",
        import_field="phone",
    ),
    HubSpotProperty(
        "lifecyclestage",
        "Lifecycle Stage",
        ENUMERATION,
        RADIO,
        CONTACT_INFORMATION,
        "Where the contact is in the funnel.",
        _enum("lifecyclestage", lambda contact: contact.lifecycle_stage),
        field="lifecycle_stage",
        criteria="lifecycle_stage",
        sort="lifecycle_stage",
        options=LIFECYCLE_OPTIONS,
        blank_allowed=False,
        import_field="lifecycle_stage",
    ),
    HubSpotProperty(
        "hs_lead_status",
        "Lead Status",
        ENUMERATION,
        RADIO,
        CONTACT_INFORMATION,
        "The sales team's status of the lead; empty when unset.",
        _enum("hs_lead_status", lambda contact: contact.lead_status),
        field="lead_status",
        criteria="lead_status",
        sort="lead_status",
        options=LEAD_STATUS_OPTIONS,
        import_field="lead_status",
    ),
    HubSpotProperty(
        "hs_email_optout",
        "Unsubscribed from all email",
        ENUMERATION,
        CHECKBOX,
        EMAIL_INFORMATION,
        "Unsubscribed from marketing email: no marketing email is sent, whatever the status.",
        lambda contact, now: _boolean(contact.unsubscribed),
        field="unsubscribed",
        criteria="unsubscribed",
        sort="unsubscribed",
        options=BOOLEAN_OPTIONS,
        blank_allowed=False,
        import_field="unsubscribed",
    ),
    HubSpotProperty(
        "hs_email_hard_bounce_reason_enum",
        "Email hard bounce reason",
        ENUMERATION,
        SELECT,
        EMAIL_INFORMATION,
        "Set when the address hard-bounced (Marketable records the bounce, not its reason).",
        lambda contact, now: "OTHER" if contact.hard_bounced else None,
        criteria="hard_bounced",
        options=BOUNCE_OPTIONS,
        calculated=True,
    ),
    HubSpotProperty(
        "hubspotscore",
        "HubSpot Score",
        NUMBER,
        NUMBER_FIELD,
        CONTACT_INFORMATION,
        "The lead score, derived from engagement events by the scoring rules.",
        lambda contact, now: str(contact.lead_score),
        criteria="lead_score",
        sort="lead_score",
        calculated=True,
    ),
    HubSpotProperty(
        "hs_analytics_source",
        "Original Source",
        ENUMERATION,
        SELECT,
        ANALYTICS_INFORMATION,
        "The kind of source the contact was created from (HubSpot's object-source values "
        "where one exists: CRM_UI, IMPORT, FORM, INTEGRATION, CONVERSATIONS…).",
        _enum("hs_analytics_source", lambda contact: contact.source.kind),
        criteria="source_kind",
        sort="source__kind",
        options=SOURCE_OPTIONS,
        calculated=True,
    ),
    HubSpotProperty(
        "createdate",
        "Create Date",
        DATETIME,
        DATE_FIELD,
        CONTACT_INFORMATION,
        "When the contact was created.",
        lambda contact, now: hubspot_datetime(contact.created_at),
        criteria="created_at",
        sort="created_at",
        calculated=True,
        import_field="hubspot_created_at",
    ),
    HubSpotProperty(
        "lastmodifieddate",
        "Last Modified Date",
        DATETIME,
        DATE_FIELD,
        CONTACT_INFORMATION,
        "When the contact last changed (a field or its marketing status).",
        lambda contact, now: hubspot_datetime(contact.updated_at),
        criteria="updated_at",
        sort="updated_at",
        calculated=True,
    ),
    HubSpotProperty(
        "hs_marketable_status",
        "Marketing contact status",
        ENUMERATION,
        CHECKBOX,
        CONTACT_INFORMATION,
        "Whether the contact is a marketing contact now (billable). Writable with the "
        "permission contacts.change_marketing_status: true takes effect at once, false at "
        "the next update date (until then it reads true with hs_marketable_until_renewal "
        "true).",
        lambda contact, now: _boolean(
            is_marketing(contact.marketing_status, contact.marketing_until, now)
        ),
        status=True,
        criteria="marketing_status",
        options=MARKETING_OPTIONS,
        blank_allowed=False,
        import_field="hubspot_marketing",
    ),
    HubSpotProperty(
        "hs_marketable_until_renewal",
        "Marketing contact until next update",
        ENUMERATION,
        CHECKBOX,
        CONTACT_INFORMATION,
        "True while the contact is marketing but set to become non-marketing at the next "
        "update date.",
        lambda contact, now: _boolean(
            is_pending(contact.marketing_status, contact.marketing_until, now)
        ),
        options=BOOLEAN_OPTIONS,
        calculated=True,
        import_field="hubspot_until_renewal",
    ),
    HubSpotProperty(
        "hs_marketable_reason_type",
        "Marketing contact status source type",
        ENUMERATION,
        SELECT,
        CONTACT_INFORMATION,
        "What last set the marketing status (or decided it when the contact was created).",
        _enum("hs_marketable_reason_type", lambda contact: contact.marketing_reason_type),
        options=REASON_OPTIONS,
        calculated=True,
    ),
    HubSpotProperty(
        "hs_marketable_reason_id",
        "Marketing contact status source ID",
        STRING,
        TEXT,
        CONTACT_INFORMATION,
        "The id of what last set the marketing status (a workflow, an import, a user…).",
        lambda contact, now: contact.marketing_reason_id or None,
        calculated=True,
    ),
)

PROPERTIES: dict[str, HubSpotProperty] = {prop.name: prop for prop in _PROPERTY_LIST}
# A contact field's property: turns a field's validation error into HubSpot's name for it.
FIELD_PROPERTIES: dict[str, str] = {p.field: p.name for p in _PROPERTY_LIST if p.field}

# A column of HubSpot's contacts export → the import field it fills: each property's label
# and the other labels exports have used for it. Compared by the importer's header key.
EXPORT_LABELS: dict[str, str] = {
    label: prop.import_field
    for prop in _PROPERTY_LIST
    if prop.import_field
    for label in (prop.label, *prop.export_labels)
}
# "Marketing contact status" in an export: the options' labels and values, and the words
# HubSpot shows for a marketing contact whose downgrade waits for the next update.
MARKETING_PENDING = "pending"
EXPORT_MARKETING_VALUES: dict[str, bool | str] = {
    **{o.label: o.ours for o in MARKETING_OPTIONS},
    **{o.value: o.ours for o in MARKETING_OPTIONS},
    "Set to non-marketing contact at the next update": MARKETING_PENDING,
    "Set to non-marketing contact at next update": MARKETING_PENDING,
    "Non-marketing contact at next update": MARKETING_PENDING,
}

# Returned when a request names no properties (HubSpot's defaults for contacts).
DEFAULT_PROPERTIES = (
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
)
# Returned whatever the request names, as HubSpot does.
ALWAYS_PROPERTIES = ("hs_object_id", "createdate", "lastmodifieddate")


def properties_to_read(requested: list[str] | None) -> list[str]:
    """The properties a read returns: the defaults, or the known ones asked for plus the
    three HubSpot always returns. Unknown names are ignored, as HubSpot ignores them."""
    if not requested:
        return list(DEFAULT_PROPERTIES)
    names = [name for name in dict.fromkeys(requested) if name in PROPERTIES]
    return names + [name for name in ALWAYS_PROPERTIES if name not in names]


def contact_properties(contact: Contact, names: list[str], now: dt.datetime) -> dict:
    """The contact's values of these properties, in HubSpot's formats."""
    return {name: PROPERTIES[name].read(contact, now) for name in names}


@dataclass(frozen=True)
class PropertyProblem:
    """One property a write cannot take: its name, HubSpot's error code and why."""

    name: str
    code: str
    message: str


@dataclass
class ContactWrite:
    """A write's properties as Marketable values: contact fields and the status asked for."""

    fields: dict[str, Any] = field(default_factory=dict)
    marketing: bool | None = None  # hs_marketable_status: True, False, or not written

    @property
    def writes_status(self) -> bool:
        return self.marketing is not None


def _scalar_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return _boolean(value)
    if isinstance(value, int | float | str):
        return str(value)
    raise PropertyValueError("INVALID_VALUE", f"expected a text value, got {type(value).__name__}")


def _parse_value(prop: HubSpotProperty, raw: Any) -> Any:
    text = _scalar_text(raw)
    if prop.options:
        if not text.strip():
            if prop.blank_allowed:
                return ""
            raise PropertyValueError("INVALID_OPTION", f"{prop.name} cannot be empty.")
        option = prop.option(text)
        if option is None:
            allowed = ", ".join(o.value for o in prop.options if not o.hidden)
            raise PropertyValueError(
                "INVALID_OPTION", f"{text!r} was not one of the allowed options: {allowed}."
            )
        return option.ours
    if not text.strip() and not prop.blank_allowed:
        raise PropertyValueError("INVALID_VALUE", f"{prop.name} cannot be empty.")
    return text


def parse_write(properties: dict[str, Any]) -> tuple[ContactWrite, list[PropertyProblem]]:
    """A write's HubSpot properties as a `ContactWrite`, and every property it cannot take."""
    write, problems = ContactWrite(), []
    for name, raw in properties.items():
        prop = PROPERTIES.get(name)
        if prop is None:
            problems.append(
                PropertyProblem(name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
            )
            continue
        if not prop.writable:
            problems.append(
                PropertyProblem(
                    name,
                    "READ_ONLY_VALUE",
                    f'"{name}" is a read only property; its value cannot be set.',
                )
            )
            continue
        try:
            value = _parse_value(prop, raw)
        except PropertyValueError as exc:
            problems.append(PropertyProblem(name, exc.code, str(exc)))
            continue
        if prop.status:
            write.marketing = value
        else:
            write.fields[prop.field] = value
    return write, problems


def field_problems(message_dict: dict[str, list[str]]) -> list[PropertyProblem]:
    """A contact's validation errors (by field) as problems named by HubSpot property."""
    problems = []
    for field_name, messages in message_dict.items():
        name = FIELD_PROPERTIES.get(field_name, field_name)
        code = "INVALID_EMAIL" if field_name == "email" else "INVALID_VALUE"
        problems.extend(PropertyProblem(name, code, message) for message in messages)
    return problems


def search_value(prop: HubSpotProperty, raw: Any) -> Any:
    """A search filter's value as the criteria compiler reads it: an enumeration's HubSpot
    value becomes ours (booleans "true"/"false"); anything else is left for the compiler
    to check."""
    if not prop.options or not isinstance(raw, str):
        return raw
    option = prop.option(raw)
    if option is None:
        return raw
    if isinstance(option.ours, bool):
        return _boolean(option.ours)
    return option.ours
