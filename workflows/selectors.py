"""Reads of the workflows app: hygiene and savings selections, rotation pools, scoring rules
and the marketing definition (every enabled workflow that changes the status)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet

from contacts.criteria import criteria_q, criteria_queryset
from contacts.criteria.selectors import CRITERIA_SAMPLE_SIZE, criteria_describe
from contacts.models import Contact
from contacts.status.results import SET_NON_MARKETING
from contacts.status.rules import settled_q
from contacts.status.services import contacts_status_preview
from workflows.models import (
    DEFAULT_UNENGAGED_DAYS,
    ActionType,
    RotationMember,
    RotationPlan,
    RotationRanking,
    Workflow,
    WorkflowPurpose,
)

# Hygiene and the savings report select *settled* billable contacts: marketing with no
# pending downgrade. Those are exactly what a downgrade can still save; a pending contact
# already leaves at the next update date.
HYGIENE_REASONS = ("unsubscribed", "hard_bounced", "unengaged", "criteria")


def contacts_settled_billable():
    """Marketing contacts without a pending downgrade (`contacts.status.rules.settled_q`)."""
    return Contact.objects.filter(settled_q())


def unengaged_q(*, days: int, now: dt.datetime) -> Q:
    """No engagement in `days` days (never engaged included), created more than `days` ago."""
    cutoff = now - dt.timedelta(days=days)
    return (Q(last_engaged_at__lt=cutoff) | Q(last_engaged_at__isnull=True)) & Q(
        created_at__lt=cutoff
    )


def hygiene_reason_qs(*, options: dict, now: dt.datetime) -> dict[str, Q]:
    """The ticked reasons of a hygiene pass, each as a Q over Contact."""
    reasons: dict[str, Q] = {}
    if options.get("include_unsubscribed"):
        reasons["unsubscribed"] = Q(unsubscribed=True)
    if options.get("include_hard_bounced"):
        reasons["hard_bounced"] = Q(hard_bounced=True)
    if options.get("include_unengaged"):
        days = int(options.get("unengaged_days") or DEFAULT_UNENGAGED_DAYS)
        reasons["unengaged"] = unengaged_q(days=days, now=now)
    tree = options.get("criteria") or {"filterGroups": []}
    if tree.get("filterGroups"):
        reasons["criteria"] = criteria_q(tree, now=now)
    return reasons


def hygiene_selection(*, options: dict, now: dt.datetime) -> QuerySet[Contact]:
    """Settled billable contacts meeting any ticked reason (none ticked: no contact)."""
    reasons = hygiene_reason_qs(options=options, now=now)
    if not reasons:
        return Contact.objects.none()
    union = Q()
    for q in reasons.values():
        union |= q
    return contacts_settled_billable().filter(union)


@dataclass(frozen=True)
class HygienePreview:
    count: int
    by_reason: dict[str, int]  # contacts meeting each reason (a contact may meet several)
    effective_from: dt.datetime  # the next update date
    saving: int | None  # a month's invoice from the next period, minor units
    currency: str
    cost: dict  # billing's numbers (StatusPreview.extra["cost"]["next_period"])
    sample: QuerySet[Contact]


def hygiene_preview(*, options: dict, now: dt.datetime) -> HygienePreview:
    """What a hygiene pass would schedule and save; nothing is written. Two aggregates."""
    reasons = hygiene_reason_qs(options=options, now=now)
    selection = hygiene_selection(options=options, now=now)
    by_reason = {}
    if reasons:
        raw = contacts_settled_billable().aggregate(
            **{f"n_{name}": Count("pk", filter=q) for name, q in reasons.items()}
        )
        by_reason = {name: raw[f"n_{name}"] for name in reasons}
    status = contacts_status_preview(contacts=selection, operation=SET_NON_MARKETING, at=now)
    cost = (status.extra.get("cost") or {}).get("next_period") or {}
    return HygienePreview(
        count=status.would_schedule,
        by_reason=by_reason,
        effective_from=status.period_end,
        saving=cost.get("saving"),
        currency=cost.get("currency", ""),
        cost=cost,
        sample=selection.select_related("source").order_by("-id")[:CRITERIA_SAMPLE_SIZE],
    )


# Savings report: reasons in precedence order (a contact is counted once, under the first).
SAVINGS_REASONS = ("unsubscribed", "hard_bounced", "unengaged")


@dataclass(frozen=True)
class SavingsReport:
    at: dt.datetime
    unengaged_days: int
    next_update_date: dt.datetime
    reasons: dict[str, dict]  # reason -> {count, once, saving}
    total: int  # distinct contacts
    saving: int  # demoting all of them
    already_pending: int  # marketing contacts already leaving at the next update date
    currency: str


def savings_report(
    *, now: dt.datetime, unengaged_days: int = DEFAULT_UNENGAGED_DAYS, price=None
) -> SavingsReport:
    """Settled marketing contacts that cannot be marketed to (unsubscribed, hard bounced) or
    are unengaged, and what demoting them would save from the next period.

    One aggregate over the settled billable contacts; `price(demote=n)` is billing's
    `billing_demotion_saving` (the interface passes it: workflows' reads stay billing-free).
    """
    unsub, bounced = Q(unsubscribed=True), Q(hard_bounced=True)
    unengaged = unengaged_q(days=unengaged_days, now=now)
    # Aliases must not shadow the columns the filters read ("unsubscribed"…).
    raw = contacts_settled_billable().aggregate(
        n_unsubscribed=Count("pk", filter=unsub),
        n_hard_bounced=Count("pk", filter=bounced),
        n_unengaged=Count("pk", filter=unengaged),
        n_hard_bounced_once=Count("pk", filter=bounced & ~unsub),
        n_unengaged_once=Count("pk", filter=unengaged & ~unsub & ~bounced),
        n_total=Count("pk", filter=unsub | bounced | unengaged),
    )
    counts = {key[2:]: value for key, value in raw.items()}
    pending = Contact.objects.pending_downgrade(now).count()  # contact_pending_idx
    once = {
        "unsubscribed": counts["unsubscribed"],
        "hard_bounced": counts["hard_bounced_once"],
        "unengaged": counts["unengaged_once"],
    }
    price = price or (lambda demote: {"saving": None, "currency": ""})
    reasons = {}
    currency = ""
    for name in SAVINGS_REASONS:
        priced = price(demote=counts[name])
        currency = priced.get("currency", currency)
        reasons[name] = {"count": counts[name], "once": once[name], "saving": priced["saving"]}
    total = price(demote=counts["total"])
    from contacts.status.selectors import usage_current

    return SavingsReport(
        at=now,
        unengaged_days=unengaged_days,
        next_update_date=usage_current(at=now).next_update,
        reasons=reasons,
        total=counts["total"],
        saving=total["saving"],
        already_pending=pending,
        currency=total.get("currency", currency),
    )


def rotation_ranking(plan: RotationPlan, *, best_first: bool) -> list:
    """ORDER BY for a plan's ranking; least engaged first unless `best_first`."""
    score, engaged = F("lead_score"), F("last_engaged_at")
    by_engagement = plan.ranking == RotationRanking.ENGAGEMENT
    keys = [engaged, score] if by_engagement else [score, engaged]
    if best_first:
        return [k.desc(nulls_last=True) for k in keys] + [F("pk").asc()]
    return [k.asc(nulls_first=True) for k in keys] + [F("pk").asc()]


def rotation_active_members(plan: RotationPlan) -> QuerySet[RotationMember]:
    return RotationMember.objects.filter(
        plan=plan, left_at__isnull=True
    )  # rotationmember_active_idx


def rotation_billable_members(plan: RotationPlan, *, at: dt.datetime) -> QuerySet[Contact]:
    """The plan's members billable at `at` (a member pending downgrade still counts)."""
    member_ids = rotation_active_members(plan).values("contact_id")
    return Contact.objects.billable(at).filter(pk__in=member_ids)


def rotation_candidates(plan: RotationPlan, *, at: dt.datetime) -> QuerySet[Contact]:
    """Pool contacts the plan may promote: not billable, not suppressed, not an active
    member; those never in the plan come first, then the best by the ranking."""
    past = RotationMember.objects.filter(plan=plan, contact=OuterRef("pk"))
    return (
        Contact.objects.not_billable(at)
        .filter(criteria_q(plan.criteria, now=at), unsubscribed=False, hard_bounced=False)
        .exclude(pk__in=rotation_active_members(plan).values("contact_id"))
        .annotate(was_member=Exists(past))
        .order_by("was_member", *rotation_ranking(plan, best_first=True))
    )


def scoring_rules_enabled() -> list:
    """The enabled scoring rules (a handful: one small query)."""
    from workflows.models import ScoringRule

    return list(ScoringRule.objects.filter(enabled=True).order_by("event_type", "id"))


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
