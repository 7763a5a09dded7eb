"""Reads over a criteria tree: what it selects (the criteria tester, previews) and what it
says in plain words (the marketing-definition overview)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from contacts.criteria.compiler import criteria_queryset
from contacts.criteria.validation import criteria_validate
from contacts.models import Contact

CRITERIA_SAMPLE_SIZE = 20


@dataclass(frozen=True)
class CriteriaPreview:
    count: int
    sample: QuerySet[Contact]  # the newest matching contacts, at most `sample_size`


def criteria_preview(
    *, tree: Any, now: dt.datetime, sample_size: int = CRITERIA_SAMPLE_SIZE
) -> CriteriaPreview:
    """How many contacts a tree selects at `now`, and a few of them: two statements."""
    matching = criteria_queryset(tree, now=now)
    return CriteriaPreview(
        count=matching.count(),
        sample=matching.select_related("source").order_by("-id")[:sample_size],
    )


_OPERATOR_WORDS = {
    "EQ": "is",
    "NEQ": "is not",
    "LT": "is less than",
    "LTE": "is at most",
    "GT": "is more than",
    "GTE": "is at least",
    "BETWEEN": "is between",
    "IN": "is any of",
    "NOT_IN": "is none of",
    "HAS_PROPERTY": "is known",
    "NOT_HAS_PROPERTY": "is unknown",
    "CONTAINS_TOKEN": "contains",
    "NOT_CONTAINS_TOKEN": "does not contain",
    "WITHIN_LAST_DAYS": "is within the last",
    "NOT_WITHIN_LAST_DAYS": "is not within the last",
}


def _value_text(value) -> str:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def criteria_describe(tree: Any) -> str:
    """A criteria tree in plain language: "(A and B) or (C)"."""
    criteria = criteria_validate(tree)
    if not criteria.groups:
        return "no contact (no filter groups)"
    groups = []
    for group in criteria.groups:
        parts = []
        for f in group:
            words = f"{f.field.label.lower()} {_OPERATOR_WORDS[f.operator]}"
            if f.values:
                words += " " + ", ".join(_value_text(v) for v in f.values)
            elif f.operator == "BETWEEN":
                words += f" {_value_text(f.value)} and {_value_text(f.high_value)}"
            elif f.value is not None:
                words += f" {_value_text(f.value)}"
                if f.operator.endswith("WITHIN_LAST_DAYS") or f.field.name == "last_engaged":
                    words += " days"
            if f.event_type:
                words += f" (events: {f.event_type})"
            if f.within_days:
                words += f" (last {f.within_days} days)"
            parts.append(words)
        groups.append(" and ".join(parts))
    if len(groups) == 1:
        return groups[0]
    return " or ".join(f"({g})" for g in groups)
