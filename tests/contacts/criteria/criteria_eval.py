"""A plain-Python evaluation of a criteria tree, written from the reference in
docs/ARCHITECTURE.md ("Criteria") and independent of contacts.criteria's compiler.

It reads canonical trees (our field names, values already of the right type:
datetimes as ISO 8601 strings) and contacts as plain dicts, one at a time — the
slow, obvious way the compiler must agree with.
"""

from __future__ import annotations

import datetime as dt
import re

NEGATIVE = {
    "NEQ": "EQ",
    "NOT_IN": "IN",
    "NOT_HAS_PROPERTY": "HAS_PROPERTY",
    "NOT_CONTAINS_TOKEN": "CONTAINS_TOKEN",
    "NOT_WITHIN_LAST_DAYS": "WITHIN_LAST_DAYS",
}
TEXT = {"email", "first_name", "last_name", "company", "phone", "source_name"}
PLAIN = {
    "lifecycle_stage",
    "lead_status",
    "contact_type",
    "unsubscribed",
    "hard_bounced",
    "lead_score",
    "source_kind",
    "source_id",
    "contact_id",
}
DATES = {"created_at", "updated_at", "last_engaged_at"}
COLUMNS = {"contact_id": "id"}  # fields named otherwise than their column


def when(value) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


def token_match(text: str, pattern: str) -> bool:
    """Is `pattern` (with `*` wildcards) a whole space-separated token or phrase of `text`?"""
    regex = ".*".join(re.escape(part) for part in pattern.lower().split("*"))
    return re.fullmatch(f".* {regex} .*", f" {text.lower()} ", flags=re.DOTALL) is not None


def matches(tree: dict, contact: dict, events: list[dict], now: dt.datetime) -> bool:
    return any(
        all(_filter(f, contact, events, now) for f in group["filters"])
        for group in tree["filterGroups"]
    )


def _filter(f: dict, contact: dict, events: list[dict], now: dt.datetime) -> bool:
    operator = f["operator"]
    if operator in NEGATIVE:
        return not _positive({**f, "operator": NEGATIVE[operator]}, contact, events, now)
    return _positive(f, contact, events, now)


def _compare(operator: str, actual, f: dict) -> bool:
    if actual is None:
        return False
    value = f.get("value")
    if operator == "EQ":
        return actual == value
    if operator == "IN":
        return actual in f["values"]
    if operator == "LT":
        return actual < value
    if operator == "LTE":
        return actual <= value
    if operator == "GT":
        return actual > value
    if operator == "GTE":
        return actual >= value
    if operator == "BETWEEN":
        return value <= actual <= f["highValue"]
    raise AssertionError(operator)


def _in_window(instant, days: int, now: dt.datetime) -> bool:
    return instant is not None and now - dt.timedelta(days=days) <= instant <= now


def _positive(f: dict, contact: dict, events: list[dict], now: dt.datetime) -> bool:
    name, operator = f["propertyName"], f["operator"]
    if name in TEXT:
        actual = contact[name]
        if operator == "HAS_PROPERTY":
            return actual != ""
        if operator == "CONTAINS_TOKEN":
            return token_match(actual, f["value"])
        if operator == "EQ":
            return actual.lower() == f["value"].lower()
        return actual.lower() in {v.lower() for v in f["values"]}
    if name in PLAIN:
        actual = contact[COLUMNS.get(name, name)]
        if operator == "HAS_PROPERTY":
            return actual is True if name == "hard_bounced" else actual != ""
        return _compare(operator, actual, f)
    if name in DATES:
        actual = contact[name]
        if operator == "HAS_PROPERTY":
            return actual is not None
        if operator == "WITHIN_LAST_DAYS":
            return _in_window(actual, f["value"], now)
        g = dict(f)
        for key in ("value", "highValue"):
            if key in g:
                g[key] = when(g[key])
        return _compare(operator, actual, g)
    if name == "email_domain":
        domain = contact["email"].rsplit("@", 1)[1]
        wanted = [f["value"]] if operator == "EQ" else f["values"]
        return domain in wanted
    if name == "marketing_status":
        effective = (
            "marketing"
            if contact["marketing_status"] == "marketing"
            and (contact["marketing_until"] is None or contact["marketing_until"] > now)
            else "non_marketing"
        )
        return _compare(operator, effective, f)
    if name == "source_integration":
        if contact["source_kind"] != "integration":
            return False
        if operator == "HAS_PROPERTY":
            return True
        wanted = [f["value"]] if operator == "EQ" else f["values"]
        return any(
            contact["source_id"] == w
            if isinstance(w, int)
            else contact["source_name"].lower() == w.lower()
            for w in wanted
        )
    mine = [e for e in events if f.get("eventType") in (None, e["type"])]
    if name == "last_engaged":
        if operator == "HAS_PROPERTY":
            return bool(mine)
        return any(_in_window(e["occurred_at"], f["value"], now) for e in mine)
    if name == "engagement_count":
        if f.get("withinDays"):
            mine = [e for e in mine if _in_window(e["occurred_at"], f["withinDays"], now)]
        return _compare(operator, len(mine), f)
    raise AssertionError(f"unknown field {name}")
