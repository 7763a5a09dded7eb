"""Writes of the workflows app: runs, scoring, hygiene, rotation. Status changes go through
contacts.services (the one status service)."""


# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---


# --- engagement scoring (issue 5, item 7) ---


# --- hygiene, rotation, savings (issue 5, items 8-10) ---
#
# Every status change here goes through contacts.services with a `hygiene` or `rotation`
# source; billing is reached only through the status service's hooks (the preview's
# `extra["cost"]`, the guardrails of a guarded set-marketing).

import datetime as dt  # noqa: E402
from dataclasses import dataclass  # noqa: E402

from django.db import IntegrityError, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from contacts.models import Contact, StatusSourceType, UsageState  # noqa: E402
from contacts.services import (  # noqa: E402
    ChangeHeld,
    StatusSource,
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from crm.calendar import BillingCalendar  # noqa: E402
from workflows.criteria import criteria_validate  # noqa: E402
from workflows.models import (  # noqa: E402
    HygienePolicy,
    HygieneRun,
    HygieneSchedule,
    RotationMember,
    RotationPlan,
    RotationRun,
    RotationRunStatus,
    RotationStep,
    RunTrigger,
)
from workflows.selectors import (  # noqa: E402
    hygiene_preview,
    hygiene_selection,
    rotation_active_members,
    rotation_billable_members,
    rotation_candidates,
    rotation_ranking,
)

MEMBER_WRITE_BATCH = 2_000  # RotationMember rows per bulk_create (~100 KB)


def hygiene_options_clean(options: dict) -> dict:
    """The options a hygiene pass takes, validated (criteria included) and canonical."""
    days = int(options.get("unengaged_days") or 90)
    if not 1 <= days <= 3_650:
        raise ValueError("unengaged_days must be between 1 and 3650.")
    tree = options.get("criteria") or {"filterGroups": []}
    return {
        "include_unsubscribed": bool(options.get("include_unsubscribed")),
        "include_hard_bounced": bool(options.get("include_hard_bounced")),
        "include_unengaged": bool(options.get("include_unengaged")),
        "unengaged_days": days,
        "criteria": criteria_validate(tree).as_json(),  # CriteriaError on a bad tree
    }


def hygiene_run(
    *,
    options: dict,
    idempotency_key: str,
    trigger: str,
    name: str = "Hygiene wizard",
    policy: HygienePolicy | None = None,
    actor=None,
    at: dt.datetime | None = None,
) -> HygieneRun:
    """Schedule the selected contacts non-marketing at the next update date (one status call).

    Only settled billable contacts are selected (marketing, no pending downgrade), so
    every match is a scheduled downgrade. The run row and the status change commit
    together under `idempotency_key`: a double submit or a retried beat finds the run
    (the unique key blocks a concurrent twin until the first commits) and changes nothing.
    """
    existing = HygieneRun.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        return existing
    options = hygiene_options_clean(options)
    now = at or timezone.now()
    try:
        with transaction.atomic():
            run = HygieneRun.objects.create(
                policy=policy,
                name=(policy.name if policy else name)[:200],
                trigger=trigger,
                idempotency_key=idempotency_key,
                options=options,
                at=now,
                actor=actor if getattr(actor, "pk", None) else None,
            )
            preview = hygiene_preview(options=options, now=now)
            result = contacts_set_non_marketing(
                contacts=hygiene_selection(options=options, now=now),
                source=StatusSource(
                    StatusSourceType.HYGIENE,
                    id=str(policy.pk) if policy else f"run-{run.pk}",
                    name=run.name,
                ),
                actor=run.actor,
                idempotency_key=f"hygiene:{idempotency_key}",
                at=now,
            )
            run.matched = result.matched
            run.scheduled = result.scheduled
            run.effective_from = result.effective_from or preview.effective_from
            run.saving = preview.saving
            run.currency = preview.currency
            run.breakdown = preview.by_reason
            run.save()
            return run
    except IntegrityError:  # a concurrent twin committed the same key first
        return HygieneRun.objects.get(idempotency_key=idempotency_key)


def hygiene_policy_due_key(policy: HygienePolicy, *, now: dt.datetime) -> str | None:
    """The idempotency key of the policy's scheduled run due at `now`, or None when not due.

    Before each update date: due from `days_before_update` days ahead until the date,
    one run per date. On an interval: one run per slot of `interval_days` days (slots
    counted from the epoch, so a restart never runs a slot twice).
    """
    if not policy.enabled:
        return None
    if policy.schedule == HygieneSchedule.BEFORE_UPDATE:
        next_update = BillingCalendar.for_account().next_update(now)
        if now < next_update - dt.timedelta(days=policy.days_before_update):
            return None
        return f"policy:{policy.pk}:before:{next_update.isoformat()}"
    if policy.schedule == HygieneSchedule.INTERVAL:
        slot = int(now.timestamp() // (policy.interval_days * 86_400))
        return f"policy:{policy.pk}:every:{policy.interval_days}d:{slot}"
    return None


def hygiene_policies_run_due(*, at: dt.datetime | None = None) -> list[HygieneRun]:
    """The beat's pass: run every enabled policy that is due (each once per due slot)."""
    now = at or timezone.now()
    runs = []
    for policy in HygienePolicy.objects.filter(enabled=True).order_by("pk"):
        key = hygiene_policy_due_key(policy, now=now)
        if key is None or HygieneRun.objects.filter(idempotency_key=key).exists():
            continue
        runs.append(
            hygiene_run(
                options=policy.options(),
                idempotency_key=key,
                trigger=RunTrigger.SCHEDULE,
                policy=policy,
                at=now,
            )
        )
    return runs


# --- rotation ---


@dataclass(frozen=True)
class RotationOutcome:
    plan_id: int
    demote: RotationRun | None
    promote: RotationRun | None


def _rotation_source(plan: RotationPlan) -> StatusSource:
    return StatusSource(StatusSourceType.ROTATION, id=str(plan.pk), name=plan.name)


def rotation_demote(
    *, plan: RotationPlan, at: dt.datetime | None = None, dry_run: bool = False
) -> RotationRun | None:
    """Within `lead_days` before the next update date: schedule the plan's R lowest-ranked
    settled members non-marketing at that date (once per date). None when not in the window.

    The members stay billable until the date; the rollover applies the downgrades there.
    """
    now = at or timezone.now()
    boundary = BillingCalendar.for_account().next_update(now)
    if now < boundary - dt.timedelta(days=plan.lead_days):
        return None
    key = f"rotation:{plan.pk}:demote:{boundary.isoformat()}"
    existing = RotationRun.objects.filter(idempotency_key=key).first()
    if existing is not None:
        return existing
    members = rotation_active_members(plan).filter(leaving_at__isnull=True)
    settled = Contact.objects.filter(
        pk__in=members.values("contact_id"), marketing_status="marketing", marketing_until=None
    )
    ids = list(
        settled.order_by(*rotation_ranking(plan, best_first=False)).values_list("pk", flat=True)[
            : plan.rotate_per_period
        ]
    )
    before = rotation_billable_members(plan, at=now).count()
    run = RotationRun(
        plan=plan,
        step=RotationStep.DEMOTE,
        boundary=boundary,
        idempotency_key=key,
        at=now,
        members_before=before,
        candidate_ids=ids,
        status=RotationRunStatus.DONE if ids else RotationRunStatus.SKIPPED,
    )
    if dry_run:
        run.demoted = len(ids)
        run.members_after = before
        return run
    try:
        with transaction.atomic():
            run.save()
            if ids:
                result = contacts_set_non_marketing(
                    contacts=ids, source=_rotation_source(plan), idempotency_key=key, at=now
                )
                rotation_active_members(plan).filter(contact_id__in=ids).update(
                    leaving_at=result.effective_from
                )
                run.demoted = result.scheduled
            # Pending members are billable until the date: the count does not move yet.
            run.members_after = rotation_billable_members(plan, at=now).count()
            run.save()
            return run
    except IntegrityError:
        return RotationRun.objects.get(idempotency_key=key)


def rotation_rolled_over(*, now: dt.datetime) -> dt.datetime | None:
    """The start of the current period if its rollover has run, else None."""
    start = BillingCalendar.for_account().period_bounds(now)[0]
    state = UsageState.objects.filter(pk=1).first()
    if state is None or state.rolled_over_through is None or state.rolled_over_through < start:
        return None
    return start


def rotation_promote(
    *, plan: RotationPlan, at: dt.datetime | None = None, dry_run: bool = False
) -> RotationRun | None:
    """After the current period's rollover: close the memberships of members no longer
    billable, then promote the best pool contacts into the free slots, K − billable members.

    A member pending downgrade counts as billable, so slots free up only once the
    rollover has applied the demotions: the plan's billable members never exceed K.
    Guarded by billing: a held promotion is kept with its ids and key, and each later
    call in the period retries the same request (approved: the members are recorded).
    None before the rollover.
    """
    now = at or timezone.now()
    start = rotation_rolled_over(now=now)
    if start is None:
        return None
    key = f"rotation:{plan.pk}:promote:{start.isoformat()}"
    run = RotationRun.objects.filter(idempotency_key=key).first()
    if run is not None and run.status != RotationRunStatus.HELD:
        return run
    if dry_run:
        free = max(0, plan.size - rotation_billable_members(plan, at=now).count())
        ids = list(rotation_candidates(plan, at=now).values_list("pk", flat=True)[:free])
        return RotationRun(
            plan=plan, step=RotationStep.PROMOTE, boundary=start, idempotency_key=key, at=now,
            status=RotationRunStatus.DONE if ids else RotationRunStatus.SKIPPED,
            promoted=len(ids), candidate_ids=ids,
        )  # fmt: skip
    try:
        with transaction.atomic():
            if run is None:
                # Memberships end where the contact stopped being billable (demoted, or
                # downgraded by anyone else): the slot is free from now on.
                billable = Contact.objects.billable(now).values("pk")
                rotation_active_members(plan).exclude(contact_id__in=billable).update(left_at=now)
                before = rotation_billable_members(plan, at=now).count()
                free = max(0, plan.size - before)
                ids = list(rotation_candidates(plan, at=now).values_list("pk", flat=True)[:free])
                run = RotationRun.objects.create(
                    plan=plan,
                    step=RotationStep.PROMOTE,
                    boundary=start,
                    idempotency_key=key,
                    at=now,
                    members_before=before,
                    candidate_ids=ids,
                    status=RotationRunStatus.DONE if ids else RotationRunStatus.SKIPPED,
                )
            ids = run.candidate_ids
            if ids:
                try:
                    contacts_set_marketing(
                        contacts=ids,
                        source=_rotation_source(plan),
                        idempotency_key=key,
                        at=now,
                        guarded=True,
                    )
                except ChangeHeld as held:
                    run.status = RotationRunStatus.HELD
                    run.message = str(held)
                    run.save()
                    return run
                joined = Contact.objects.billable(now).filter(pk__in=ids)
                joined = joined.exclude(pk__in=rotation_active_members(plan).values("contact_id"))
                RotationMember.objects.bulk_create(
                    [
                        RotationMember(plan=plan, contact_id=pk, joined_at=now)
                        for pk in joined.values_list("pk", flat=True)
                    ],
                    batch_size=MEMBER_WRITE_BATCH,
                )
                run.status = RotationRunStatus.DONE
                run.message = ""
            run.members_after = rotation_billable_members(plan, at=now).count()
            run.promoted = max(0, run.members_after - run.members_before)
            run.save()
            return run
    except IntegrityError:
        return RotationRun.objects.get(idempotency_key=key)


def rotation_tick(
    *, plan: RotationPlan, at: dt.datetime | None = None, dry_run: bool = False
) -> RotationOutcome:
    """One beat for a plan: promote after the rollover, demote before the update date.

    Promotion first: right after a boundary both may be due (a short period), and the
    demotions of the coming date must be chosen among the members after the fill.
    """
    promote = rotation_promote(plan=plan, at=at, dry_run=dry_run)
    demote = rotation_demote(plan=plan, at=at, dry_run=dry_run)
    return RotationOutcome(plan_id=plan.pk, demote=demote, promote=promote)


def rotation_plans_run(*, at: dt.datetime | None = None) -> list[RotationOutcome]:
    return [
        rotation_tick(plan=plan, at=at)
        for plan in RotationPlan.objects.filter(enabled=True).order_by("pk")
    ]
