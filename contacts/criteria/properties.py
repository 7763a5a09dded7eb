"""The whitelist a criteria filter may name: operators, limits and the field registry.

A `propertyName` is a key into `FIELDS` (or a HubSpot alias of one, `ALIASES`), never an
ORM lookup: the ORM path of each field is written here and only the compiler reads it, so
"source__kind" or "id__in" are simply unknown fields. docs/ARCHITECTURE.md ("Criteria")
is the user reference of every field and operator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from contacts.models import (
    ContactType,
    LeadStatus,
    LifecycleStage,
    MarketingStatus,
    SourceKind,
)

# Limits: HubSpot's own search allows 5 groups of 6 filters; a marketing definition
# needs more, and these keep one compiled statement well inside any planner's limits.
MAX_GROUPS = 25
MAX_FILTERS_PER_GROUP = 25
MAX_IN_VALUES = 1_000
MAX_TEXT_LENGTH = 1_000
MAX_DAYS = 3_650  # ten years: "within the last N days" and `withinDays`
MAX_EVENT_COUNT = 1_000_000
INT32 = 2**31 - 1  # lead_score is an integer column
INT64 = 2**63 - 1  # ids are BIGINTs

EQ, NEQ = "EQ", "NEQ"
LT, LTE, GT, GTE, BETWEEN = "LT", "LTE", "GT", "GTE", "BETWEEN"
IN, NOT_IN = "IN", "NOT_IN"
HAS_PROPERTY, NOT_HAS_PROPERTY = "HAS_PROPERTY", "NOT_HAS_PROPERTY"
CONTAINS_TOKEN, NOT_CONTAINS_TOKEN = "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"
WITHIN_LAST_DAYS, NOT_WITHIN_LAST_DAYS = "WITHIN_LAST_DAYS", "NOT_WITHIN_LAST_DAYS"

OPERATORS: tuple[str, ...] = (
    EQ,
    NEQ,
    LT,
    LTE,
    GT,
    GTE,
    BETWEEN,
    IN,
    NOT_IN,
    HAS_PROPERTY,
    NOT_HAS_PROPERTY,
    CONTAINS_TOKEN,
    NOT_CONTAINS_TOKEN,
    WITHIN_LAST_DAYS,
    NOT_WITHIN_LAST_DAYS,
)
# Each operator as a person says it: the editor's choices, the plain-words description of
# a tree and the editor's error messages.
OPERATOR_WORDS: dict[str, str] = {
    EQ: "is",
    NEQ: "is not",
    LT: "is less than",
    LTE: "is at most",
    GT: "is more than",
    GTE: "is at least",
    BETWEEN: "is between",
    IN: "is any of",
    NOT_IN: "is none of",
    HAS_PROPERTY: "is known",
    NOT_HAS_PROPERTY: "is unknown",
    CONTAINS_TOKEN: "contains the word",
    NOT_CONTAINS_TOKEN: "does not contain the word",
    WITHIN_LAST_DAYS: "is within the last",
    NOT_WITHIN_LAST_DAYS: "is not within the last",
}
# Each negative operator is the exact complement of its positive one (module docstring).
NEGATIONS: dict[str, str] = {
    NEQ: EQ,
    NOT_IN: IN,
    NOT_HAS_PROPERTY: HAS_PROPERTY,
    NOT_CONTAINS_TOKEN: CONTAINS_TOKEN,
    NOT_WITHIN_LAST_DAYS: WITHIN_LAST_DAYS,
}
# Which of HubSpot's value keys each operator takes.
SINGLE_VALUE_OPERATORS = frozenset(
    {EQ, NEQ, LT, LTE, GT, GTE, CONTAINS_TOKEN, NOT_CONTAINS_TOKEN}
    | {WITHIN_LAST_DAYS, NOT_WITHIN_LAST_DAYS}
)
LIST_OPERATORS = frozenset({IN, NOT_IN})
NO_VALUE_OPERATORS = frozenset({HAS_PROPERTY, NOT_HAS_PROPERTY})
VALUE_KEYS = ("value", "highValue", "values")
EXTRA_KEYS = ("eventType", "withinDays")  # engagement facts only

EQUALITY = (EQ, NEQ, IN, NOT_IN)
PRESENCE = (HAS_PROPERTY, NOT_HAS_PROPERTY)
TOKENS = (CONTAINS_TOKEN, NOT_CONTAINS_TOKEN)
ORDER = (LT, LTE, GT, GTE, BETWEEN)
DAYS = (WITHIN_LAST_DAYS, NOT_WITHIN_LAST_DAYS)


class Kind:
    TEXT = "text"
    ENUM = "enum"
    BOOL = "bool"
    INT = "int"
    DATETIME = "datetime"
    # Facts with their own compiler:
    DOMAIN = "domain"
    MARKETING = "marketing"
    INTEGRATION = "integration"
    LAST_ENGAGED = "last_engaged"
    ENGAGEMENT_COUNT = "engagement_count"


@dataclass(frozen=True)
class FieldSpec:
    """One field a criteria filter may name: how to read it and what it accepts."""

    name: str
    label: str
    kind: str
    operators: tuple[str, ...]
    path: str | None = None  # ORM path from Contact; used only by the compiler
    choices: tuple[str, ...] = ()
    value_aliases: Mapping[str, str] = field(default_factory=dict)
    lowercase_stored: bool = False  # text stored lower-cased: compare without LOWER()
    nullable: bool = False
    extra_keys: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()  # HubSpot's internal property names
    help: str = ""


_TEXT_OPS = (*EQUALITY, *PRESENCE, *TOKENS)
_ENUM_OPS = EQUALITY
_DATE_OPS = (*ORDER, *DAYS)

# HubSpot's internal values for its own properties, mapped onto ours.
HUBSPOT_LIFECYCLE_VALUES = {
    "marketingqualifiedlead": LifecycleStage.MQL,
    "salesqualifiedlead": LifecycleStage.SQL,
}
HUBSPOT_SOURCE_VALUES = {  # hs_object_source
    "crm_ui": SourceKind.MANUAL,
    "conversations": SourceKind.CHATFLOW,
    "mobile_ios": SourceKind.MOBILE_APP,
    "mobile_android": SourceKind.MOBILE_APP,
}
MARKETING_VALUES = {"true": MarketingStatus.MARKETING, "false": MarketingStatus.NON_MARKETING}

_FIELD_LIST: tuple[FieldSpec, ...] = (
    FieldSpec(
        "lifecycle_stage",
        "Lifecycle stage",
        Kind.ENUM,
        (*_ENUM_OPS,),
        path="lifecycle_stage",
        choices=tuple(LifecycleStage.values),
        value_aliases=HUBSPOT_LIFECYCLE_VALUES,
        aliases=("lifecyclestage",),
    ),
    FieldSpec(
        "lead_status",
        "Lead status",
        Kind.ENUM,
        (*_ENUM_OPS, *PRESENCE),
        path="lead_status",
        choices=tuple(LeadStatus.values),
        aliases=("hs_lead_status",),
    ),
    FieldSpec(
        "contact_type",
        "Contact type",
        Kind.ENUM,
        _ENUM_OPS,
        path="contact_type",
        choices=tuple(ContactType.values),
    ),
    FieldSpec(
        "marketing_status",
        "Marketing status (effective now)",
        Kind.MARKETING,
        _ENUM_OPS,
        choices=tuple(MarketingStatus.values),
        value_aliases=MARKETING_VALUES,
        aliases=("hs_marketable_status",),
        help="A contact pending non-marketing is marketing until its date.",
    ),
    FieldSpec(
        "unsubscribed",
        "Unsubscribed from marketing email",
        Kind.BOOL,
        (EQ, NEQ),
        path="unsubscribed",
        aliases=("hs_email_optout",),
    ),
    FieldSpec(
        "hard_bounced",
        "Hard bounced",
        Kind.BOOL,
        (EQ, NEQ, *PRESENCE),
        path="hard_bounced",
        aliases=("hs_email_hard_bounce_reason_enum", "hs_email_hard_bounce_reason"),
        help="HAS_PROPERTY means bounced, as HubSpot's bounce reason is set only then.",
    ),
    FieldSpec(
        "lead_score",
        "Lead score",
        Kind.INT,
        (*EQUALITY, *ORDER),
        path="lead_score",
        aliases=("hubspotscore",),
    ),
    FieldSpec("email", "Email", Kind.TEXT, _TEXT_OPS, path="email", lowercase_stored=True),
    FieldSpec(
        "email_domain",
        "Email domain (after the @)",
        Kind.DOMAIN,
        _ENUM_OPS,
        path="email",
        aliases=("hs_email_domain",),
    ),
    FieldSpec(
        "first_name", "First name", Kind.TEXT, _TEXT_OPS, path="first_name", aliases=("firstname",)
    ),
    FieldSpec(
        "last_name", "Last name", Kind.TEXT, _TEXT_OPS, path="last_name", aliases=("lastname",)
    ),
    FieldSpec("company", "Company", Kind.TEXT, _TEXT_OPS, path="company"),
    FieldSpec("phone", "Phone", Kind.TEXT, _TEXT_OPS, path="phone"),
    FieldSpec(
        "created_at",
        "Created at",
        Kind.DATETIME,
        _DATE_OPS,
        path="created_at",
        aliases=("createdate",),
    ),
    FieldSpec(
        "updated_at",
        "Last modified at",
        Kind.DATETIME,
        _DATE_OPS,
        path="updated_at",
        aliases=("lastmodifieddate",),
        help="A field or the marketing status changed (not indexed: a filter reads the table).",
    ),
    FieldSpec(
        "last_engaged_at",
        "Last engaged at (contact field)",
        Kind.DATETIME,
        (*_DATE_OPS, *PRESENCE),
        path="last_engaged_at",
        nullable=True,
    ),
    FieldSpec(
        "source_kind",
        "Source kind",
        Kind.ENUM,
        _ENUM_OPS,
        path="source__kind",
        choices=tuple(SourceKind.values),
        value_aliases=HUBSPOT_SOURCE_VALUES,
        aliases=("hs_object_source", "hs_analytics_source"),
    ),
    FieldSpec(
        "source_name",
        "Source name",
        Kind.TEXT,
        (*EQUALITY, *TOKENS),
        path="source__name",
    ),
    FieldSpec("source_id", "Source id", Kind.INT, EQUALITY, path="source_id"),
    FieldSpec(
        "contact_id",
        "Contact id",
        Kind.INT,
        (*EQUALITY, *ORDER),
        path="id",
        aliases=("hs_object_id",),
        help="HubSpot's way past its 10,000-result search window: hs_object_id GT <last id>.",
    ),
    FieldSpec(
        "source_integration",
        "Created by integration (name or id)",
        Kind.INTEGRATION,
        (*EQUALITY, *PRESENCE),
        help="HAS_PROPERTY: created by any integration.",
    ),
    FieldSpec(
        "last_engaged",
        "Engaged (an engagement event)",
        Kind.LAST_ENGAGED,
        (*DAYS, *PRESENCE),
        extra_keys=("eventType",),
        help="value = N days; eventType narrows to one event type.",
    ),
    FieldSpec(
        "engagement_count",
        "Number of engagement events",
        Kind.ENGAGEMENT_COUNT,
        (EQ, NEQ, *ORDER),
        extra_keys=("eventType", "withinDays"),
        help="eventType and withinDays (last N days) narrow the events counted.",
    ),
)

FIELDS: dict[str, FieldSpec] = {spec.name: spec for spec in _FIELD_LIST}
# Integer fields holding ids: any positive BIGINT, where other integers are 32-bit.
ID_FIELDS = frozenset({"contact_id", "source_id"})
ALIASES: dict[str, str] = {alias: spec.name for spec in _FIELD_LIST for alias in spec.aliases}


def criteria_field(property_name: str) -> FieldSpec | None:
    """The registry entry a propertyName names (ours or a HubSpot alias), or None."""
    name = ALIASES.get(property_name, property_name)
    return FIELDS.get(name)
