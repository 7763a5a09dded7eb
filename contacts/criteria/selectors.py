"""Reads over a criteria tree: what it selects (the criteria tester, previews) and what it
says in plain words (the marketing-definition overview)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.formats import date_format

from contacts.criteria.compiler import criteria_queryset
from contacts.criteria.properties import OPERATOR_WORDS
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


def _value_text(value) -> str:
    if isinstance(value, dt.datetime):
        return date_format(timezone.localtime(value), "DATETIME_FORMAT")
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
            words = f"{f.field.label.lower()} {OPERATOR_WORDS[f.operator]}"
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
