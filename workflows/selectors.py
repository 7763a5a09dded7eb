"""Reads over the criteria: what a tree selects, for previews and the tester page."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from contacts.models import Contact
from workflows.criteria import criteria_queryset

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


# --- engagement scoring (issue 5, item 7) ---


def scoring_rules_enabled() -> list:
    """The enabled scoring rules (a handful: one small query)."""
    from workflows.models import ScoringRule

    return list(ScoringRule.objects.filter(enabled=True).order_by("event_type", "id"))
