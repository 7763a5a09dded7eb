"""Validating a criteria tree: its shape, then its meaning, with every problem named.

`criteria_validate(tree)` checks the shape against a JSON Schema (`CRITERIA_JSON_SCHEMA`),
then each well-formed filter against the registry (`contacts.criteria.properties`): a
known field, an operator allowed for it, the value keys that operator takes, values of
the right type and choice, BETWEEN ordered, the limits. Every problem is reported at once
as a `CriteriaIssue` naming its group, filter, field and operator; `CriteriaError`
carries them, with adapters for Django forms and DRF. A valid tree comes back as
`Criteria`: our field names and coerced values, what the compiler reads.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from jsonschema import Draft202012Validator

from contacts.criteria.properties import (
    BETWEEN,
    DAYS,
    EXTRA_KEYS,
    FIELDS,
    ID_FIELDS,
    INT32,
    INT64,
    LIST_OPERATORS,
    MAX_DAYS,
    MAX_EVENT_COUNT,
    MAX_FILTERS_PER_GROUP,
    MAX_GROUPS,
    MAX_IN_VALUES,
    MAX_TEXT_LENGTH,
    OPERATOR_WORDS,
    OPERATORS,
    SINGLE_VALUE_OPERATORS,
    TOKENS,
    VALUE_KEYS,
    FieldSpec,
    Kind,
    criteria_field,
)
from contacts.engagement.models import EngagementType
from crm.instants import instant_utc


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

    @property
    def sentence(self) -> str:
        """The problem as the criteria editor says it: field labels and operator words
        ("Group 1, filter 2 (Lead score is at least): the value must be a whole number, not
        “ten”."), where `str()` keeps the names an API client wrote."""
        spec = criteria_field(self.field) if self.field else None
        words = OPERATOR_WORDS.get(self.operator or "", self.operator or "")
        place = ", ".join(
            part
            for part in (
                f"group {self.group + 1}" if self.group is not None else "",
                f"filter {self.filter + 1}" if self.filter is not None else "",
            )
            if part
        ).capitalize()
        subject = f"{spec.label} {words}".strip() if spec else ""
        if subject and place:
            place += f" ({subject})"
        text = _issue_sentence(self, spec, words)
        return f"{place}: {text}" if place else text

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
        """For Django forms: one sentence a problem, each naming where it is."""
        return ValidationError(
            [ValidationError(issue.sentence, code=issue.code) for issue in self.errors]
        )


# The keys of a filter as the editor titles them.
_KEY_WORDS = {
    "value": "a value",
    "highValue": "a high value",
    "values": "at least one value",
    "eventType": "an event type",
    "withinDays": "a number of days",
    "propertyName": "a field",
    "operator": "an operator",
}


def _issue_sentence(issue: CriteriaIssue, spec: FieldSpec | None, words: str) -> str:
    """The message of one problem for a person using the editor (see `sentence`)."""
    key = _KEY_WORDS.get(issue.key or "", "a value")
    if issue.code == "unknown_field":
        return f"there is no field “{issue.field}”; pick one from the list."
    if issue.code == "operator_not_allowed" and spec is not None:
        allowed = ", ".join(f"“{OPERATOR_WORDS[op]}”" for op in spec.operators)
        return f"{spec.label} cannot use “{words}”; use one of {allowed}."
    if issue.code == "missing_value":
        return f"“{words}” needs {key}."
    if issue.code == "unexpected_value":
        noun = key.removeprefix("a ").removeprefix("an ").removeprefix("at least one ")
        return f"“{words}” takes no {noun}; leave it empty."
    if issue.code == "unexpected_key":
        owners = ", ".join(s.label for s in FIELDS.values() if issue.key in s.extra_keys)
        return f"{key[0].upper()}{key[1:]} applies only to {owners}; leave it empty."
    if issue.code == "bad_range":
        return "the low value must not be more than the high value."
    if issue.code == "bad_value":
        detail = issue.message.split(": ", 1)[-1].rstrip(".")
        noun = key.removeprefix("a ").removeprefix("an ").removeprefix("at least one ")
        return f"the {noun} is not valid ({detail})."
    return issue.message[:1].lower() + issue.message[1:]


# Shape only: `criteria_validate` checks the meaning.
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
    if "\x00" in text:  # PostgreSQL refuses NUL in text parameters
        raise _BadValue("must not contain NUL characters")
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


# The years a date in a tree (or the instant it is evaluated at) may fall in: day windows
# and their bounds stay within what a datetime holds.
MIN_YEAR, MAX_YEAR = 1900, 9998


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
        if not MIN_YEAR <= value.year <= MAX_YEAR:
            raise _BadValue(f"{raw} is out of range (years {MIN_YEAR} to {MAX_YEAR})")
        return value
    if isinstance(raw, str):
        try:
            value = dt.datetime.fromisoformat(raw.strip())
        except ValueError as exc:
            raise _BadValue(
                f"{raw!r} is not a date (ISO 8601 like 2026-01-31 or 2026-01-31T09:00:00Z, "
                "or epoch milliseconds)"
            ) from exc
        if not MIN_YEAR <= value.year <= MAX_YEAR:
            raise _BadValue(f"{raw!r} is out of range (years {MIN_YEAR} to {MAX_YEAR})")
        return instant_utc(value)  # in range: the conversion cannot overflow
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
        if spec.name in ID_FIELDS:
            return _to_int(raw, low=1, high=INT64)
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
