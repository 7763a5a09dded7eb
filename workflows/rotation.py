"""Rotation: keep at most K contacts of a pool marketing at a time (DESIGN §1.6).

Before each update date the least engaged active members are scheduled non-marketing;
right after the boundary's rollover the best pool contacts are promoted into the free
slots. Demotions land exactly at the boundary and promotions start the new period, so the
plan's billable members never exceed K. Every status change goes through the status
service with a `rotation` source; a promotion is guarded by billing's guardrails through
that service (a held promotion is retried with the same request).
"""

import datetime as dt
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from contacts.models import Contact, StatusSourceType
from contacts.status.models import UsageState
from contacts.status.results import ChangeHeld, StatusSource
from contacts.status.rules import settled_q
from contacts.status.services import contacts_set_marketing, contacts_set_non_marketing
from crm.calendar import BillingCalendar
from crm.rows import row_get_or_create
from workflows.models import (
    RotationMember,
    RotationPlan,
    RotationRun,
    RotationRunStatus,
    RotationStep,
)
from workflows.selectors import (
    rotation_active_members,
    rotation_billable_members,
    rotation_candidates,
    rotation_ranking,
)

MEMBER_WRITE_BATCH = 2_000  # RotationMember rows per bulk_create (~100 KB)


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
    settled = Contact.objects.filter(settled_q(), pk__in=members.values("contact_id"))
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

    def store() -> RotationRun:
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

    # A concurrent twin for the same date waits on the key, then answers with this run.
    return row_get_or_create(RotationRun, lookup={"idempotency_key": key}, create=store)[0]


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
