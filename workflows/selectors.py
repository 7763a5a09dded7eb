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


# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---

from workflows.criteria import criteria_q, criteria_validate  # noqa: E402
from workflows.models import ActionType, Workflow, WorkflowPurpose  # noqa: E402

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


@dataclass(frozen=True)
class DefinitionRow:
    workflow: Workflow
    effect: str  # "makes marketing" / "makes non-marketing (from the next update date)"
    criteria_text: str
    matched: int


@dataclass(frozen=True)
class Overlap:
    enrollment: Workflow
    exclusion: Workflow
    both: int  # contacts matched by both

    @property
    def exclusion_wins(self) -> bool:
        """Only an exclusion-purpose workflow takes precedence; another workflow that sets
        non-marketing simply races the enrollment (the warning says so)."""
        return self.exclusion.purpose == WorkflowPurpose.EXCLUSION


@dataclass(frozen=True)
class MarketingDefinition:
    rows: list[DefinitionRow]
    overlaps: list[Overlap]


def marketing_definition(*, now: dt.datetime) -> MarketingDefinition:
    """Every enabled workflow that changes marketing status, with its current match count, and
    the overlaps between enrollment (set marketing) and exclusion workflows, with counts.

    One COUNT per workflow and one per (enrollment, exclusion) pair: a handful of queries."""
    rows, makers, removers = [], [], []
    for workflow in Workflow.objects.filter(enabled=True).order_by("purpose", "name"):
        kinds = workflow.action_types
        if ActionType.SET_MARKETING in kinds:
            effect = "makes contacts marketing"
            makers.append(workflow)
        elif ActionType.SET_NON_MARKETING in kinds:
            effect = "makes contacts non-marketing (from the next update date)"
            removers.append(workflow)
        else:
            continue
        if workflow.purpose == WorkflowPurpose.EXCLUSION and workflow not in removers:
            removers.append(workflow)
        rows.append(
            DefinitionRow(
                workflow=workflow,
                effect=effect,
                criteria_text=criteria_describe(workflow.criteria),
                matched=criteria_queryset(workflow.criteria, now=now).count(),
            )
        )
    overlaps = []
    for maker in makers:
        for remover in removers:
            if remover.pk == maker.pk:
                continue
            both = (
                criteria_queryset(maker.criteria, now=now)
                .filter(criteria_q(remover.criteria, now=now))
                .count()
            )
            overlaps.append(Overlap(enrollment=maker, exclusion=remover, both=both))
    return MarketingDefinition(rows=rows, overlaps=overlaps)
