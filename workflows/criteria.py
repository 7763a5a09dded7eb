"""Criteria: which contacts a workflow (or a hygiene policy, or a preview) acts on.

A criteria tree is HubSpot's CRM search `filterGroups` — the OR of groups, each
the AND of filters — over a whitelist of contact fields, source facts and
engagement facts (docs/ARCHITECTURE.md, "Criteria", is the user reference):

    {"filterGroups": [{"filters": [
        {"propertyName": "lifecycle_stage", "operator": "IN", "values": ["lead", "mql"]},
        {"propertyName": "engagement_count", "operator": "GTE", "value": 3,
         "eventType": "email_click", "withinDays": 30}]}]}

Three steps, each its own function:

* `criteria_validate(tree)`: a JSON Schema (`CRITERIA_JSON_SCHEMA`) checks the
  shape, then each filter is checked against the registry `FIELDS` (known
  field, operator allowed for it, values of the right type and choice, BETWEEN
  ordered, limits). Every problem is reported at once as a `CriteriaIssue`
  naming its group, filter, field and operator; `CriteriaError` carries them.
* `criteria_q(tree, now=…)`: the validated tree as one `Q` over `Contact`.
  Engagement facts are correlated `Exists`/`Subquery` over `EngagementEvent`,
  so a count or a page of matching contacts is ONE SQL statement; nothing is
  evaluated contact by contact in Python.
* The ORM paths come only from the registry: a `propertyName` is a key into
  `FIELDS`, never a lookup string, so "source__kind" or "id__in" cannot reach
  `filter(**…)` — they are unknown fields.

Why the negative operators are complements: HubSpot's lists include contacts
with no value in "is none of", and a workflow author who writes "lead status is
not unqualified" means every contact that is not known to be unqualified. So
NEQ, NOT_IN, NOT_HAS_PROPERTY, NOT_CONTAINS_TOKEN and NOT_WITHIN_LAST_DAYS
match exactly the contacts their positive operator does not — blank and NULL
values included — while LT/LTE/GT/GTE/BETWEEN never match a missing value.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Lower
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    LessThan,
    LessThanOrEqual,
    Lookup,
)
from jsonschema import Draft202012Validator

from contacts.engagement.models import (
    EngagementEvent,
    EngagementType,
)
from contacts.models import (
    Contact,
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


# --- Errors ---


@dataclass(frozen=True)
class CriteriaIssue:
    """One problem in a tree. `group` and `filter` are 0-based indexes (None above that level)."""

    message: str
    code: str
    group: int | None = None
    filter: int | None = None
    field: str | None = None  # the propertyName as written
    operator: str | None = None
    key: str | None = None  # the filter key at fault: "value", "values", "eventType", …

    @property
    def where(self) -> str:
        parts = []
        if self.group is not None:
            parts.append(f"group {self.group + 1}")
        if self.filter is not None:
            parts.append(f"filter {self.filter + 1}")
        place = ", ".join(parts).capitalize()
        if self.field or self.operator:
            place += f" ({' '.join(p for p in (self.field, self.operator) if p)})"
        return place

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "filter": self.filter,
            "field": self.field,
            "operator": self.operator,
            "key": self.key,
            "code": self.code,
            "message": self.message,
        }

    @property
    def coords(self) -> list[str | int]:
        """Where the problem sits in the tree (django-jsonform's error map keys)."""
        coords: list[str | int] = []
        if self.group is not None:
            coords += ["filterGroups", self.group]
            if self.filter is not None:
                coords += ["filters", self.filter]
                if self.key:
                    coords.append(self.key)
        return coords


class CriteriaError(Exception):
    """A tree that cannot be compiled; `errors` lists every problem found."""

    def __init__(self, errors: list[CriteriaIssue]):
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in self.errors))

    def as_list(self) -> list[dict[str, Any]]:
        """DRF-friendly: `raise serializers.ValidationError({"criteria": exc.as_list()})`."""
        return [issue.as_dict() for issue in self.errors]

    def as_dict(self, key: str = "criteria") -> dict[str, list[dict[str, Any]]]:
        return {key: self.as_list()}

    def as_validation_error(self) -> ValidationError:
        """For Django forms: one message a problem, each naming where it is."""
        return ValidationError(
            [ValidationError(str(issue), code=issue.code) for issue in self.errors]
        )


# --- The registry of fields ---


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
ALIASES: dict[str, str] = {alias: spec.name for spec in _FIELD_LIST for alias in spec.aliases}


def criteria_field(property_name: str) -> FieldSpec | None:
    """The registry entry a propertyName names (ours or a HubSpot alias), or None."""
    name = ALIASES.get(property_name, property_name)
    return FIELDS.get(name)


# --- The JSON Schema (shape only; `criteria_validate` checks the meaning) ---

_SCALAR = {"type": ["string", "number", "boolean", "null"], "maxLength": MAX_TEXT_LENGTH}
CRITERIA_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Marketable criteria (HubSpot filterGroups)",
    "type": "object",
    "properties": {
        "filterGroups": {
            "type": "array",
            "maxItems": MAX_GROUPS,
            "items": {
                "type": "object",
                "properties": {
                    "filters": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": MAX_FILTERS_PER_GROUP,
                        "items": {
                            "type": "object",
                            "properties": {
                                "propertyName": {
                                    "type": "string",
                                    "minLength": 1,
                                    "maxLength": 100,
                                },
                                "operator": {"enum": list(OPERATORS)},
                                "value": _SCALAR,
                                "highValue": _SCALAR,
                                "values": {
                                    "type": ["array", "null"],
                                    "minItems": 1,
                                    "maxItems": MAX_IN_VALUES,
                                    "items": _SCALAR,
                                },
                                "eventType": {"type": ["string", "null"], "maxLength": 100},
                                "withinDays": {
                                    "type": ["integer", "string", "null"],
                                    "maxLength": 20,
                                },
                            },
                            "required": ["propertyName", "operator"],
                            "additionalProperties": False,
                        },
                    }
                },
                "required": ["filters"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["filterGroups"],
    "additionalProperties": False,
}
_SCHEMA_VALIDATOR = Draft202012Validator(CRITERIA_JSON_SCHEMA)


def _schema_message(error) -> tuple[str, str]:
    """A human message (and code) for one jsonschema error."""
    validator = error.validator
    if validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(error.schema.get("properties", {}))
        return f"Unknown key {', '.join(map(repr, extra))} (allowed: {allowed}).", "unknown_key"
    if validator == "required":
        return f"{error.message.split(' is ')[0]} is required.", "required"
    if validator == "enum":
        return (
            f"Unknown operator {error.instance!r} (allowed: {', '.join(OPERATORS)}).",
            "unknown_operator",
        )
    if validator == "maxItems":
        return f"Too many items: at most {error.validator_value}.", "too_many"
    if validator == "minItems":
        return "Must not be empty.", "empty"
    if validator == "type":
        expected = error.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        return f"Must be {expected}, not {type(error.instance).__name__}.", "bad_type"
    if validator in ("maxLength", "minLength"):
        return f"Length must be between 1 and {MAX_TEXT_LENGTH} characters.", "bad_length"
    return error.message, "invalid"


def _schema_issues(tree: Any) -> tuple[list[CriteriaIssue], set[tuple[int, int | None]]]:
    """Shape errors, and the (group, filter) places they spoil (a whole group: filter None)."""
    issues, spoiled = [], set()
    for error in _SCHEMA_VALIDATOR.iter_errors(tree):
        path = list(error.absolute_path)
        group = path[1] if len(path) >= 2 and isinstance(path[1], int) else None
        filter_ = path[3] if len(path) >= 4 and isinstance(path[3], int) else None
        key = path[4] if len(path) >= 5 and isinstance(path[4], str) else None
        field_name = operator = None
        if filter_ is not None:
            raw = tree["filterGroups"][group]["filters"][filter_]
            if isinstance(raw, dict):
                if isinstance(raw.get("propertyName"), str):
                    field_name = raw["propertyName"]
                if isinstance(raw.get("operator"), str) and key != "operator":
                    operator = raw["operator"]
        message, code = _schema_message(error)
        if error.validator == "minItems" and path[-1:] == ["filters"]:
            message, code = "A group needs at least one filter.", "empty_group"
        elif key and key != "operator":
            message = f"{key}: {message}"
        issues.append(CriteriaIssue(message, code, group, filter_, field_name, operator, key=key))
        if group is not None:
            spoiled.add((group, filter_))
    return issues, spoiled


# --- Semantic validation ---


@dataclass(frozen=True)
class Filter:
    """One validated filter: our field, the operator and coerced values."""

    field: FieldSpec
    operator: str
    value: Any = None
    high_value: Any = None
    values: tuple[Any, ...] = ()
    event_type: str | None = None
    within_days: int | None = None


@dataclass(frozen=True)
class Criteria:
    """A validated tree: the OR of groups, each the AND of its filters. No groups: no contact."""

    groups: tuple[tuple[Filter, ...], ...]

    def as_json(self) -> dict[str, Any]:
        """The canonical tree: our field names, coerced values (datetimes in ISO 8601)."""
        return {"filterGroups": [{"filters": [_filter_json(f) for f in g]} for g in self.groups]}


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _filter_json(f: Filter) -> dict[str, Any]:
    out: dict[str, Any] = {"propertyName": f.field.name, "operator": f.operator}
    if f.operator in LIST_OPERATORS:
        out["values"] = [_json_value(v) for v in f.values]
    elif f.operator in SINGLE_VALUE_OPERATORS or f.operator == BETWEEN:
        out["value"] = _json_value(f.value)
    if f.operator == BETWEEN:
        out["highValue"] = _json_value(f.high_value)
    if f.event_type:
        out["eventType"] = f.event_type
    if f.within_days is not None:
        out["withinDays"] = f.within_days
    return out


class _BadValue(Exception):
    pass


_INT_RE = re.compile(r"^[+-]?\d{1,19}$")


def _to_int(raw: Any, *, low: int, high: int, what: str = "a whole number") -> int:
    if isinstance(raw, bool):
        raise _BadValue(f"expected {what}, got {raw!r}")
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, str) and _INT_RE.match(raw.strip()):
        raw = int(raw.strip())
    if not isinstance(raw, int):
        raise _BadValue(f"expected {what}, got {raw!r}")
    if not low <= raw <= high:
        raise _BadValue(f"{raw} is out of range ({low} to {high})")
    return raw


def _to_text(raw: Any) -> str:
    if not isinstance(raw, str):
        raise _BadValue(f"expected text, got {raw!r}")
    text = raw.strip()
    if not text:
        raise _BadValue("must not be blank (use NOT_HAS_PROPERTY for a missing value)")
    return text


def _to_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise _BadValue(f"expected true or false, got {raw!r}")


def _to_choice(raw: Any, spec: FieldSpec) -> str:
    if isinstance(raw, bool) and spec.kind == Kind.MARKETING:
        raw = "true" if raw else "false"
    if not isinstance(raw, str):
        raise _BadValue(f"expected one of {', '.join(spec.choices)}, got {raw!r}")
    key = raw.strip().lower()
    key = spec.value_aliases.get(key, key)
    if key not in spec.choices:
        raise _BadValue(f"{raw!r} is not one of {', '.join(spec.choices)}")
    return str(key)


def _to_datetime(raw: Any) -> dt.datetime:
    """ISO 8601 (a date is its midnight UTC; a naive time is UTC) or epoch milliseconds."""
    if isinstance(raw, bool):
        raise _BadValue(f"expected a date, got {raw!r}")
    if isinstance(raw, str) and _INT_RE.match(raw.strip()):
        raw = int(raw.strip())
    if isinstance(raw, int | float):
        try:
            value = dt.datetime.fromtimestamp(raw / 1000, tz=dt.UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise _BadValue(f"{raw} is not a valid epoch in milliseconds") from exc
        if not 1900 <= value.year <= 9998:
            raise _BadValue(f"{raw} is out of range (years 1900 to 9998)")
        return value
    if isinstance(raw, str):
        try:
            value = dt.datetime.fromisoformat(raw.strip())
        except ValueError as exc:
            raise _BadValue(
                f"{raw!r} is not a date (ISO 8601 like 2026-01-31 or 2026-01-31T09:00:00Z, "
                "or epoch milliseconds)"
            ) from exc
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        if not 1900 <= value.year <= 9998:
            raise _BadValue(f"{raw!r} is out of range (years 1900 to 9998)")
        return value.astimezone(dt.UTC)
    raise _BadValue(f"expected a date, got {raw!r}")


def _to_domain(raw: Any) -> str:
    domain = _to_text(raw).lower().removeprefix("@")
    if not domain or "@" in domain or " " in domain:
        raise _BadValue(f"{raw!r} is not an email domain (like example.com)")
    return domain


def _to_integration(raw: Any) -> int | str:
    """An integer (or digits) is a source id; anything else a source name."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return _to_int(raw, low=1, high=2**63 - 1)
    text = _to_text(raw)
    if re.fullmatch(r"\d+", text, flags=re.ASCII):
        return _to_int(text, low=1, high=2**63 - 1, what="a source id")
    return text


def _to_token_pattern(raw: Any) -> str:
    text = _to_text(raw)
    if not text.replace("*", ""):
        raise _BadValue("a token must have a character other than *")
    return text


def _coerce_value(spec: FieldSpec, operator: str, raw: Any) -> Any:
    """One operand of `operator` on `spec`, coerced to what the compiler expects."""
    if operator in DAYS and spec.kind != Kind.ENGAGEMENT_COUNT:
        return _to_int(raw, low=1, high=MAX_DAYS, what="a number of days")
    if operator in TOKENS:
        return _to_token_pattern(raw)
    kind = spec.kind
    if kind == Kind.TEXT:
        return _to_text(raw)
    if kind in (Kind.ENUM, Kind.MARKETING):
        return _to_choice(raw, spec)
    if kind == Kind.BOOL:
        return _to_bool(raw)
    if kind == Kind.INT:
        if spec.name == "source_id":
            return _to_int(raw, low=1, high=2**63 - 1)
        return _to_int(raw, low=-INT32 - 1, high=INT32)
    if kind == Kind.DATETIME:
        return _to_datetime(raw)
    if kind == Kind.DOMAIN:
        return _to_domain(raw)
    if kind == Kind.INTEGRATION:
        return _to_integration(raw)
    if kind == Kind.ENGAGEMENT_COUNT:
        return _to_int(raw, low=0, high=MAX_EVENT_COUNT, what="a number of events")
    raise AssertionError(f"no coercion for {spec.name} {operator}")  # pragma: no cover


def _validate_filter(
    raw: dict, group: int, index: int
) -> tuple[Filter | None, list[CriteriaIssue]]:
    name, operator = raw["propertyName"], raw["operator"]
    issues: list[CriteriaIssue] = []

    def issue(message: str, code: str, key: str | None = None) -> None:
        issues.append(CriteriaIssue(message, code, group, index, name, operator, key))

    spec = criteria_field(name)
    if spec is None:
        issue(
            f"Unknown field {name!r}. Fields: {', '.join(FIELDS)} "
            "(HubSpot names are accepted too, see the criteria reference).",
            "unknown_field",
            "propertyName",
        )
        return None, issues
    if operator not in spec.operators:
        issue(
            f"{operator} is not allowed for {spec.name}; use one of {', '.join(spec.operators)}.",
            "operator_not_allowed",
            "operator",
        )
        return None, issues

    present = {k for k in (*VALUE_KEYS, *EXTRA_KEYS) if raw.get(k) is not None}
    if operator in LIST_OPERATORS:
        wanted = {"values"}
    elif operator == BETWEEN:
        wanted = {"value", "highValue"}
    elif operator in SINGLE_VALUE_OPERATORS:
        wanted = {"value"}
    else:
        wanted = set()
    for key in VALUE_KEYS:
        if key in wanted and key not in present:
            issue(f"{operator} needs {key!r}.", "missing_value", key)
        elif key in present and key not in wanted:
            issue(
                f"{operator} takes {' and '.join(sorted(wanted)) or 'no value'}, not {key!r}.",
                "unexpected_value",
                key,
            )
    for key in EXTRA_KEYS:
        if key in present and key not in spec.extra_keys:
            owners = ", ".join(s.name for s in FIELDS.values() if key in s.extra_keys)
            issue(f"{key!r} is only for {owners}.", "unexpected_key", key)
    if issues:
        return None, issues

    coerced: dict[str, Any] = {}
    for key in sorted(wanted):
        try:
            if key == "values":
                coerced[key] = tuple(_coerce_value(spec, operator, v) for v in raw[key])
            else:
                coerced[key] = _coerce_value(spec, operator, raw[key])
        except _BadValue as exc:
            issue(f"{key}: {exc}.", "bad_value", key)
    event_type = raw.get("eventType")
    if event_type is not None and event_type not in EngagementType.values:
        issue(
            f"Unknown eventType {event_type!r} (one of {', '.join(EngagementType.values)}).",
            "bad_value",
            "eventType",
        )
    within_days = raw.get("withinDays")
    if within_days is not None:
        try:
            within_days = _to_int(within_days, low=1, high=MAX_DAYS, what="a number of days")
        except _BadValue as exc:
            issue(f"withinDays: {exc}.", "bad_value", "withinDays")
    if (
        operator == BETWEEN
        and "value" in coerced
        and "highValue" in coerced
        and coerced["value"] > coerced["highValue"]
    ):
        issue("BETWEEN needs value <= highValue.", "bad_range", "highValue")
    if issues:
        return None, issues
    return (
        Filter(
            field=spec,
            operator=operator,
            value=coerced.get("value"),
            high_value=coerced.get("highValue"),
            values=coerced.get("values", ()),
            event_type=event_type,
            within_days=within_days,
        ),
        [],
    )


def criteria_validate(tree: Any) -> Criteria:
    """Check a tree's shape (JSON Schema) and meaning (the registry); raise `CriteriaError`."""
    if isinstance(tree, Criteria):
        return tree
    issues, spoiled = _schema_issues(tree)
    raw_groups = tree.get("filterGroups") if isinstance(tree, dict) else None
    if issues and not (isinstance(raw_groups, list) and len(raw_groups) <= MAX_GROUPS):
        raise CriteriaError(issues)  # no groups to look into
    groups: list[tuple[Filter, ...]] = []
    for g, raw_group in enumerate(raw_groups):
        if (g, None) in spoiled:
            continue
        filters = []
        for i, raw_filter in enumerate(raw_group["filters"]):
            if (g, i) in spoiled:
                continue
            parsed, problems = _validate_filter(raw_filter, g, i)
            issues.extend(problems)
            if parsed is not None:
                filters.append(parsed)
        groups.append(tuple(filters))
    if issues:
        raise CriteriaError(sorted(issues, key=_issue_order))
    return Criteria(groups=tuple(groups))


def _issue_order(issue: CriteriaIssue) -> tuple:
    return (
        -1 if issue.group is None else issue.group,
        -1 if issue.filter is None else issue.filter,
    )


# --- The compiler ---


class _Padded(models.Func):
    """' ' || lower(column) || ' ' (the column is NOT NULL): tokens end at the padding."""

    template = "(' ' || LOWER(%(expressions)s) || ' ')"
    output_field = models.CharField()


class _LikePattern(Lookup):
    """`lhs LIKE pattern ESCAPE '\\'`: a pattern built here (never user text unescaped)."""

    lookup_name = "criteria_like"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs} LIKE {rhs} ESCAPE '\\'", [*lhs_params, *rhs_params]


def _like_escape(text: str) -> str:
    return re.sub(r"([\\%_])", r"\\\1", text)


def token_like_pattern(value: str) -> str:
    """CONTAINS_TOKEN's LIKE pattern over " " + lower(field) + " ": a whole space-separated
    token (or phrase); `*` matches any run of characters."""
    return "% " + _like_escape(value.lower()).replace("*", "%") + " %"


def _lower(path: str):
    return Lower(F(path))


def _text_q(f: Filter, operator: str) -> Q:
    path = f.field.path
    if operator == HAS_PROPERTY:
        return ~Q(**{path: ""})
    if operator == CONTAINS_TOKEN:
        return Q(_LikePattern(_Padded(F(path)), token_like_pattern(f.value)))
    if f.field.lowercase_stored:  # e.g. email: the unique index answers EQ and IN
        if operator == EQ:
            return Q(**{path: f.value.lower()})
        return Q(**{f"{path}__in": sorted({v.lower() for v in f.values})})
    if operator == EQ:
        return Q(Exact(_lower(path), f.value.lower()))
    return Q(In(_lower(path), sorted({v.lower() for v in f.values})))


def _plain_q(f: Filter, operator: str, now: dt.datetime) -> Q:
    """Enum, boolean, integer and datetime columns: plain lookups on the registry's path."""
    path = f.field.path
    if operator == EQ:
        return Q(**{path: f.value})
    if operator == IN:
        return Q(**{f"{path}__in": sorted(set(f.values))})
    if operator == BETWEEN:
        return Q(**{f"{path}__range": (f.value, f.high_value)})
    if operator in (LT, LTE, GT, GTE):
        return Q(**{f"{path}__{operator.lower()}": f.value})
    if operator == WITHIN_LAST_DAYS:
        return Q(**{f"{path}__range": (now - dt.timedelta(days=f.value), now)})
    if operator == HAS_PROPERTY:
        if f.field.kind == Kind.BOOL:  # hard_bounced: HubSpot's reason is set only when bounced
            return Q(**{path: True})
        if f.field.nullable:
            return Q(**{f"{path}__isnull": False})
        return ~Q(**{path: ""})
    raise AssertionError(f"{operator} on {f.field.name}")  # pragma: no cover


def _domain_q(f: Filter, operator: str) -> Q:
    # Emails are stored lower-cased, so a plain LIKE '%@domain' (no LOWER) answers it: one
    # pass over the email column in SQL. A reverse(email) index would make it a range scan.
    domains = [f.value] if operator == EQ else sorted(set(f.values))
    return _any(Q(email__endswith="@" + d) for d in domains)


def marketing_q(now: dt.datetime) -> Q:
    """Effectively marketing at `now`: the same rule as `ContactQuerySet.billable(at)`."""
    return Q(marketing_status=MarketingStatus.MARKETING) & (
        Q(marketing_until__isnull=True) | Q(marketing_until__gt=now)
    )


def _marketing_q(f: Filter, operator: str, now: dt.datetime) -> Q:
    wanted = {f.value} if operator == EQ else set(f.values)
    if wanted == {MarketingStatus.MARKETING}:
        return marketing_q(now)
    if wanted == {MarketingStatus.NON_MARKETING}:
        return ~marketing_q(now)
    return Q(pk__isnull=False)  # both values: every contact


def _integration_q(f: Filter, operator: str) -> Q:
    kind = Q(source__kind=SourceKind.INTEGRATION)
    if operator == HAS_PROPERTY:
        return kind
    wanted = [f.value] if operator == EQ else list(f.values)
    ids = sorted({v for v in wanted if isinstance(v, int)})
    names = sorted({v.lower() for v in wanted if isinstance(v, str)})
    which = Q()
    if ids:
        which |= Q(source_id__in=ids)
    if names:
        which |= Q(In(_lower("source__name"), names))
    return kind & which


def _events(f: Filter, since: dt.datetime | None, now: dt.datetime):
    # engagement_contact_idx (contact, type, -occurred_at) answers each correlated probe.
    events = EngagementEvent.objects.filter(contact=OuterRef("pk"))
    if f.event_type:
        events = events.filter(type=f.event_type)
    if since is not None:
        events = events.filter(occurred_at__gte=since, occurred_at__lte=now)
    return events


def _last_engaged_q(f: Filter, operator: str, now: dt.datetime) -> Q:
    since = now - dt.timedelta(days=f.value) if operator == WITHIN_LAST_DAYS else None
    return Q(Exists(_events(f, since, now)))


def _engagement_count_q(f: Filter, operator: str, now: dt.datetime) -> Q:
    since = now - dt.timedelta(days=f.within_days) if f.within_days else None
    counted = (
        _events(f, since, now)
        .order_by()
        .values("contact")
        .annotate(n=models.Count("pk"))
        .values("n")
    )
    count = Coalesce(Subquery(counted, output_field=models.IntegerField()), 0)
    if operator == BETWEEN:
        return Q(GreaterThanOrEqual(count, f.value)) & Q(LessThanOrEqual(count, f.high_value))
    lookup = {
        EQ: Exact,
        LT: LessThan,
        LTE: LessThanOrEqual,
        GT: GreaterThan,
        GTE: GreaterThanOrEqual,
    }[operator]
    return Q(lookup(count, f.value))


def _any(qs: Iterable[Q]) -> Q:
    result = None
    for q in qs:
        result = q if result is None else result | q
    assert result is not None
    return result


_COMPILERS: dict[str, Callable[[Filter, str, dt.datetime], Q]] = {
    Kind.TEXT: lambda f, op, now: _text_q(f, op),
    Kind.ENUM: _plain_q,
    Kind.BOOL: _plain_q,
    Kind.INT: _plain_q,
    Kind.DATETIME: _plain_q,
    Kind.DOMAIN: lambda f, op, now: _domain_q(f, op),
    Kind.MARKETING: _marketing_q,
    Kind.INTEGRATION: lambda f, op, now: _integration_q(f, op),
    Kind.LAST_ENGAGED: _last_engaged_q,
    Kind.ENGAGEMENT_COUNT: _engagement_count_q,
}


def filter_q(f: Filter, *, now: dt.datetime) -> Q:
    """One validated filter as a Q. A negative operator is the complement of its positive."""
    positive = NEGATIONS.get(f.operator)
    if positive is None:
        return _COMPILERS[f.field.kind](f, f.operator, now)
    q = ~_COMPILERS[f.field.kind](f, positive, now)
    if f.field.nullable:  # NOT (x op v) is unknown, not true, where x is NULL: say it
        q |= Q(**{f"{f.field.path}__isnull": True})
    return q


def criteria_q(tree: Any, *, now: dt.datetime) -> Q:
    """The contacts a tree selects at `now`, as one Q over Contact (validates the tree first).

    An empty tree (no groups) selects no contact: a workflow with no criteria enrols nobody.
    """
    criteria = criteria_validate(tree)
    if not criteria.groups:
        return Q(pk__in=[])
    groups = []
    for group in criteria.groups:
        q = Q()
        for f in group:
            q &= filter_q(f, now=now)
        groups.append(q)
    return _any(groups)


def criteria_queryset(
    tree: Any, *, now: dt.datetime, queryset: models.QuerySet | None = None
) -> models.QuerySet:
    """`queryset` (all contacts by default) narrowed to the tree: one SQL statement to read."""
    base = Contact.objects.all() if queryset is None else queryset
    return base.filter(criteria_q(tree, now=now))


# --- The editor's schema (django-jsonform) ---


def criteria_editor_schema() -> dict[str, Any]:
    """The schema the admin's criteria editor renders, generated from the registry.

    django-jsonform draws every key of an object, so the optional keys are all
    here and the form drops the ones left empty (`workflows.forms`); the editor
    offers our field names (the HubSpot aliases still validate when typed in JSON).
    """
    fields = [{"title": f"{s.label} ({s.name})", "value": s.name} for s in FIELDS.values()]
    operators = [{"title": op, "value": op} for op in OPERATORS]
    event_types = [{"title": "(any)", "value": ""}] + [
        {"title": label, "value": value} for value, label in EngagementType.choices
    ]
    filter_schema = {
        "type": "object",
        "title": "Filter",
        "properties": {
            "propertyName": {"type": "string", "title": "Field", "choices": fields},
            "operator": {"type": "string", "title": "Operator", "choices": operators},
            "value": {
                "type": "string",
                "title": "Value",
                "helpText": "EQ, NEQ, LT…GTE, CONTAINS_TOKEN (* is a wildcard), "
                "BETWEEN's low end, WITHIN_LAST_DAYS' number of days.",
            },
            "highValue": {"type": "string", "title": "High value (BETWEEN)"},
            "values": {
                "type": "array",
                "title": "Values (IN, NOT_IN)",
                "items": {"type": "string"},
            },
            "eventType": {
                "type": "string",
                "title": "Event type (engagement facts)",
                "choices": event_types,
            },
            "withinDays": {
                "type": "string",
                "title": "Within the last N days (engagement_count)",
            },
        },
    }
    return {
        "type": "object",
        "title": "Criteria",
        "properties": {
            "filterGroups": {
                "type": "array",
                "title": "Groups: a contact matches when it meets ANY group",
                "maxItems": MAX_GROUPS,
                "items": {
                    "type": "object",
                    "title": "Group: ALL of its filters must match",
                    "properties": {
                        "filters": {
                            "type": "array",
                            "title": "Filters",
                            "minItems": 1,
                            "maxItems": MAX_FILTERS_PER_GROUP,
                            "items": filter_schema,
                        }
                    },
                },
            }
        },
    }
