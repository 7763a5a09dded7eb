"""Writes of the workflows app: runs, scoring, hygiene, rotation. Status changes go through
contacts.services (the one status service)."""

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.core.exceptions import EmptyResultSet
from django.db import IntegrityError, connection, transaction
from django.db.models import (
    BigIntegerField,
    Count,
    DateTimeField,
    Exists,
    F,
    IntegerField,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Value,
)
from django.utils import timezone

from contacts.engagement.models import EngagementEvent
from contacts.hooks import NewEngagementEvent
from contacts.models import (
    Contact,
    StatusSourceType,
)
from contacts.outreach.models import (
    AdAudience,
    MarketingEmail,
)
from contacts.outreach.services import (
    ad_audience_add,
    ad_audience_remove,
    marketing_email_send,
)
from contacts.services import contacts_set_property
from contacts.status.models import UsageState
from contacts.status.results import (
    SET_MARKETING,
    SET_NON_MARKETING,
    ChangeHeld,
    StatusError,
    StatusPreview,
    StatusSource,
)
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
    contacts_status_preview,
)
from crm.calendar import BillingCalendar
from crm.sql import update_from_rows
from workflows.criteria import criteria_q, criteria_validate
from workflows.models import (
    ActionType,
    Enrollment,
    HygienePolicy,
    HygieneRun,
    HygieneSchedule,
    HygieneTrigger,
    RotationMember,
    RotationPlan,
    RotationRun,
    RotationRunStatus,
    RotationStep,
    RunStatus,
    RunTrigger,
    ScoringRule,
    Workflow,
    WorkflowPurpose,
    WorkflowRun,
)
from workflows.selectors import (
    hygiene_preview,
    hygiene_selection,
    rotation_active_members,
    rotation_billable_members,
    rotation_candidates,
    rotation_ranking,
    scoring_rules_enabled,
)

# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---
#
# How a run works (DESIGN §1.5; docs/ARCHITECTURE.md "Workflows"):
#
# * The contacts it acts on are the NEWLY matching ones: the criteria's matches less the
#   contacts with an active enrollment in this workflow (without re-enrollment every
#   enrollment stays active forever; with it, a run that sees an enrolled contact no
#   longer matching marks it exited, and a later match enrolls it again).
# * Exclusion wins: a workflow that sets marketing never enrolls a contact that an enabled
#   exclusion workflow matches; such contacts are counted as refused (and stay
#   un-enrolled, so they enroll the day the exclusion stops matching).
# * Before writing anything, a run that sets marketing previews the whole new set once: past
#   the workflow's per-run limit, or where billing's guardrails would hold it (the
#   preview's `extra["cost"]["hold_reason"]`, billing's own rule), the run is HELD and
#   nothing is written; an approver releases it (workflow_run_approve) or rejects it.
# * Then chunks of contact ids (WORKFLOW_RANGE_BATCH wide), each ONE transaction: exits,
#   then one INSERT … SELECT … ON CONFLICT into the enrollments (the run's id on each
#   row), then every action over "the contacts this run enrolled in this id range" —
#   a durable set, so each action is idempotent on a rerun: the status service by its
#   idempotency key (run id + chunk), the property update writes only differing rows,
#   audiences are ON CONFLICT, emails are at most once per contact (EmailSend). Marketing
#   email goes out after the chunk commits (a send cannot be rolled back), then the
#   run's cursor moves past the chunk. A run killed half-way is rerun from its cursor.


logger = logging.getLogger(__name__)

# Contact ids per run chunk: one transaction, one enrollment INSERT, one status statement.
WORKFLOW_RANGE_BATCH = 50_000
PREVIEW_SAMPLE_SIZE = 20
APPROVE_PERMISSIONS = ("workflows.approve_run", "billing.approve_overage")
BILLING_APPROVE_PERMISSION = "billing.approve_overage"

RunProgress = Callable[[int, int], None]


# --- engagement scoring (issue 5, item 7) ---
#
# The lead score of a contact is Σ over its events of Σ over the enabled rules of the
# event's type of the rule's value at `now`: plain `points`; `points` when the event is in
# the rule's window (occurred_at ≥ now − window days), else 0; `points × 0.5^(age days /
# half-life)` for a decaying rule (age ≥ 0). The sum is rounded half up to a whole number.
#
# Incremental (`scores_apply_events`, on ingestion): each new event adds its rules' value
# *now* to the contact's score, in one UPDATE … FROM. That is exact for plain rules (the
# score equals the recompute's). A windowed or decaying rule's value changes with time (an
# event leaves the window, decays), which no write at ingestion can follow: ingestion adds
# its current value, and the daily recompute (task `workflows.recompute_scores`, beat
# schedule) restores exactness. Rounding: the recompute rounds each contact's total once,
# ingestion each batch's delta, so decayed fractions may differ by ±1 until the recompute.
#
# Full recompute (`scores_recompute`): per chunk of contact ids, one UPDATE … FROM (SELECT
# contact_id, SUM(CASE …) … GROUP BY contact_id) writes the contacts whose score differs,
# and one UPDATE sets 0 where a contact has no event of a scored type. The lead score is
# therefore derived: a manual edit is overwritten by the next recompute. With no enabled
# rule, scoring is off and the recompute touches nothing (so a site that keeps scores by
# hand, or imported them, does not lose them to the nightly task).


# Contact ids one recompute statement covers: a few hundred ms on PostgreSQL at 1M
# contacts, and a transaction short enough not to hold ingestion's row locks for long.
SCORE_RECOMPUTE_CHUNK = 20_000
SECONDS_PER_DAY = 86_400.0


def score_round(value: float) -> int:
    """Half up, the same in Python and in both databases' SQL (FLOOR(x + 0.5)): PostgreSQL's
    ROUND on a double and Python's round() take ties to even, SQLite's away from zero."""
    return math.floor(value + 0.5)


def scoring_rule_value(*, rule: ScoringRule, occurred_at: dt.datetime, now: dt.datetime) -> float:
    """One rule's points for one event at `now` (the recompute's SQL says the same)."""
    if rule.window_days:
        return (
            float(rule.points) if occurred_at >= now - dt.timedelta(days=rule.window_days) else 0.0
        )
    if rule.half_life_days:
        age_days = max(0.0, (now - occurred_at).total_seconds() / SECONDS_PER_DAY)
        return rule.points * 0.5 ** (age_days / rule.half_life_days)
    return float(rule.points)


def scores_event_points(
    *,
    events: Sequence[NewEngagementEvent],
    now: dt.datetime,
    rules: list[ScoringRule] | None = None,
) -> dict[int, int]:
    """Each contact's points for `events` at `now` (contacts whose points are 0 left out)."""
    by_type: dict[str, list[ScoringRule]] = {}
    for rule in scoring_rules_enabled() if rules is None else rules:
        by_type.setdefault(rule.event_type, []).append(rule)
    totals: dict[int, float] = {}
    for event in events:
        for rule in by_type.get(event.type, ()):
            totals[event.contact_id] = totals.get(event.contact_id, 0.0) + scoring_rule_value(
                rule=rule, occurred_at=event.occurred_at, now=now
            )
    return {
        contact_id: points for contact_id, total in totals.items() if (points := score_round(total))
    }


def scores_apply_events(
    *, events: Sequence[NewEngagementEvent], now: dt.datetime | None = None
) -> int:
    """Add the new events' points to their contacts' lead scores: one UPDATE … FROM
    (`lead_score = lead_score + points`). Call it once per stored event — the ingestion
    service hands back only the events it stored, so retries never score twice.
    Returns the number of contacts whose score changed."""
    if not events:
        return 0
    points = scores_event_points(events=events, now=now or timezone.now())
    return update_from_rows(
        table=Contact._meta.db_table,
        columns=[("id", "bigint"), ("points", "integer")],
        rows=sorted(points.items()),
        set_sql="lead_score = t.lead_score + u.points",
    )


def scores_on_engagement_recorded(events: list[NewEngagementEvent]) -> None:
    """contacts' engagement listener (registered in WorkflowsConfig.ready()): scores the
    events contacts records itself (form submissions, chats, ads leads), after commit."""
    with transaction.atomic():
        scores_apply_events(events=events)


@dataclass
class ScoreRecompute:
    rules: int  # enabled rules; 0 means scoring is off and nothing was touched
    chunks: int = 0
    changed: int = 0  # contacts whose score was (or, in a dry run, would be) rewritten
    dry_run: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {
            "rules": self.rules,
            "chunks": self.chunks,
            "changed": self.changed,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
        }


def _score_sql(rules: list[ScoringRule], now: dt.datetime) -> tuple[str, list]:
    """The per-event value as SQL: one CASE a rule, summed; and its parameters."""
    postgres = connection.vendor == "postgresql"
    if postgres:
        age = "GREATEST(0.0, EXTRACT(EPOCH FROM (%s::timestamptz - e.occurred_at)) / 86400.0)"
        now_param = now
    else:  # SQLite: julianday() reads the stored UTC text; POWER is built in or Django's
        age = "MAX(0.0, julianday(%s) - julianday(e.occurred_at))"
        now_param = connection.ops.adapt_datetimefield_value(now)
    terms, params = [], []
    for rule in rules:
        if rule.window_days:
            cutoff = now - dt.timedelta(days=rule.window_days)
            terms.append("CASE WHEN e.type = %s AND e.occurred_at >= %s THEN %s ELSE 0.0 END")
            params += [
                rule.event_type,
                cutoff if postgres else connection.ops.adapt_datetimefield_value(cutoff),
                float(rule.points),
            ]
        elif rule.half_life_days:
            terms.append(f"CASE WHEN e.type = %s THEN %s * POWER(0.5, {age} / %s) ELSE 0.0 END")
            params += [rule.event_type, float(rule.points), now_param, float(rule.half_life_days)]
        else:
            terms.append("CASE WHEN e.type = %s THEN %s ELSE 0.0 END")
            params += [rule.event_type, float(rule.points)]
    return " + ".join(terms), params


def scores_recompute(
    *,
    now: dt.datetime | None = None,
    contacts_since: dt.datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ScoreRecompute:
    """Rebuild lead scores from the events and the enabled rules, set-based.

    Per chunk of SCORE_RECOMPUTE_CHUNK contact ids, in its own transaction: one UPDATE …
    FROM (SELECT contact_id, FLOOR(SUM(CASE …) + 0.5) FROM events GROUP BY contact_id) for the
    contacts whose score differs, and one UPDATE to 0 for the contacts with no event of a
    scored type. `contacts_since` limits it to contacts engaged since then
    (`last_engaged_at`). `dry_run` runs the same statements and rolls each chunk back,
    counting what would change. `progress(done_ids, total_ids)` is called after each chunk.
    """
    started = time.perf_counter()
    now = now or timezone.now()
    rules = scoring_rules_enabled()
    result = ScoreRecompute(rules=len(rules), dry_run=dry_run)
    if not rules:
        return result
    contacts = Contact.objects.all()
    if contacts_since is not None:
        contacts = contacts.filter(last_engaged_at__gte=contacts_since)
    last_id = contacts.aggregate(last=Max("pk"))["last"] or 0
    value_sql, value_params = _score_sql(rules, now)
    types = sorted({rule.event_type for rule in rules})
    type_marks = ", ".join(["%s"] * len(types))
    since_sql, since_params = "", []
    if contacts_since is not None:
        since_sql = " AND t.last_engaged_at >= %s"
        since_params = [
            contacts_since
            if connection.vendor == "postgresql"
            else connection.ops.adapt_datetimefield_value(contacts_since)
        ]
    contact_table = Contact._meta.db_table
    event_table = EngagementEvent._meta.db_table
    # engagement_contact_idx (contact, type, occurred_at): a range of contacts' events of
    # the scored types, read from the index in contact order (GROUP BY needs no sort).
    scored = f"""
        UPDATE {contact_table} AS t SET lead_score = s.score
        FROM (
            SELECT e.contact_id AS id, CAST(FLOOR(SUM({value_sql}) + 0.5) AS integer) AS score
            FROM {event_table} AS e
            WHERE e.contact_id >= %s AND e.contact_id < %s AND e.type IN ({type_marks})
            GROUP BY e.contact_id
        ) AS s
        WHERE t.id = s.id AND t.lead_score <> s.score{since_sql}
    """
    unscored = f"""
        UPDATE {contact_table} AS t SET lead_score = 0
        WHERE t.id >= %s AND t.id < %s AND t.lead_score <> 0{since_sql}
          AND NOT EXISTS (
              SELECT 1 FROM {event_table} AS e
              WHERE e.contact_id = t.id AND e.type IN ({type_marks})
          )
    """
    for low in range(1, last_id + 1, SCORE_RECOMPUTE_CHUNK):
        high = low + SCORE_RECOMPUTE_CHUNK
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(scored, [*value_params, low, high, *types, *since_params])
            result.changed += cursor.rowcount
            cursor.execute(unscored, [low, high, *since_params, *types])
            result.changed += cursor.rowcount
            if dry_run:
                transaction.set_rollback(True)
        result.chunks += 1
        if progress is not None:
            progress(min(high - 1, last_id), last_id)
    result.seconds = time.perf_counter() - started
    return result


# --- hygiene, rotation, savings (issue 5, items 8-10) ---
#
# Every status change here goes through contacts.services with a `hygiene` or `rotation`
# source; billing is reached only through the status service's hooks (the preview's
# `extra["cost"]`, the guardrails of a guarded set-marketing).


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
                trigger=HygieneTrigger.SCHEDULE,
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


class WorkflowError(StatusError):
    """A workflow request that cannot be done; the message is meant for the user."""


class RunNotAllowed(WorkflowError):
    pass


def workflow_status_source(workflow: Workflow) -> StatusSource:
    return StatusSource(StatusSourceType.WORKFLOW, id=str(workflow.pk), name=workflow.name)


# --- what a run acts on ---


def _matching(workflow: Workflow, *, now: dt.datetime, ids: list[int] | None = None) -> QuerySet:
    queryset = Contact.objects.all() if ids is None else Contact.objects.filter(pk__in=ids)
    return queryset.filter(criteria_q(workflow.criteria, now=now))


def _active_enrollment(workflow: Workflow) -> Exists:
    # enrollment_once (workflow, contact) answers the probe.
    return Exists(
        Enrollment.objects.filter(
            workflow_id=workflow.pk, contact_id=OuterRef("pk"), exited_at__isnull=True
        )
    )


def exclusion_q(workflow: Workflow, *, now: dt.datetime) -> Q | None:
    """Contacts an enabled exclusion workflow matches (None: there is none), for a workflow
    that sets marketing. Exclusion wins (DESIGN §1.5)."""
    if ActionType.SET_MARKETING not in workflow.action_types:
        return None
    exclusions = Workflow.objects.filter(enabled=True, purpose=WorkflowPurpose.EXCLUSION).exclude(
        pk=workflow.pk
    )
    q = None
    for other in exclusions:
        if not criteria_validate(other.criteria).groups:
            continue
        other_q = criteria_q(other.criteria, now=now)
        q = other_q if q is None else q | other_q
    return q


@dataclass
class Candidates:
    matching: QuerySet  # meet the criteria
    new: QuerySet  # … newly (no active enrollment), not excluded: the run acts on these
    excluded: QuerySet | None  # … newly, but an exclusion workflow matches them (refused)
    excluded_q: Q | None = None  # the same as a filter over `matching`


def workflow_candidates(
    workflow: Workflow, *, now: dt.datetime, ids: list[int] | None = None
) -> Candidates:
    matching = _matching(workflow, now=now, ids=ids)
    fresh = matching.exclude(_active_enrollment(workflow))
    excluded_q = exclusion_q(workflow, now=now)
    if excluded_q is None:
        return Candidates(matching=matching, new=fresh, excluded=None)
    return Candidates(
        matching=matching,
        new=fresh.exclude(excluded_q),
        excluded=fresh.filter(excluded_q),
        excluded_q=excluded_q & ~Q(_active_enrollment(workflow)),
    )


# --- preview ---


@dataclass
class WorkflowPreview:
    workflow_id: int
    at: dt.datetime
    matched: int = 0
    would_enroll: int = 0
    refused_excluded: int = 0
    already_enrolled: int = 0
    would_become_marketing: int = 0
    would_schedule_non_marketing: int = 0
    sample: list = field(default_factory=list)  # Contacts, newest first
    status_preview: StatusPreview | None = None
    cost: dict | None = None
    hold_reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "workflow": self.workflow_id,
            "at": self.at.isoformat(),
            "matched": self.matched,
            "would_enroll": self.would_enroll,
            "already_enrolled": self.already_enrolled,
            "refused_excluded": self.refused_excluded,
            "would_become_marketing": self.would_become_marketing,
            "would_schedule_non_marketing": self.would_schedule_non_marketing,
            "cost": self.cost,
            "hold_reasons": self.hold_reasons,
            "sample": [{"id": c.pk, "email": c.email, "name": c.full_name} for c in self.sample],
        }


def _hold_reasons(workflow: Workflow, status_preview: StatusPreview) -> tuple[str, str]:
    """(limit reason, billing reason), each "" when it does not hold."""
    limit = ""
    if status_preview.would_change > workflow.max_new_marketing:
        limit = (
            f"it would make {status_preview.would_change:,} contacts marketing, more than the "
            f"workflow's per-run limit of {workflow.max_new_marketing:,}"
        )
    billing = (status_preview.extra.get("cost") or {}).get("hold_reason") or ""
    return limit, billing


def workflow_preview(
    *, workflow: Workflow, now: dt.datetime | None = None, sample_size: int = PREVIEW_SAMPLE_SIZE
) -> WorkflowPreview:
    """What a run would do now: counts, a sample, the billing impact. Writes nothing."""
    now = now or timezone.now()
    preview = WorkflowPreview(workflow_id=workflow.pk, at=now)
    if not criteria_validate(workflow.criteria).groups:
        return preview
    candidates = workflow_candidates(workflow, now=now)
    preview.matched = candidates.matching.count()
    preview.would_enroll = candidates.new.count()
    if candidates.excluded is not None:
        preview.refused_excluded = candidates.excluded.count()
    preview.already_enrolled = preview.matched - preview.would_enroll - preview.refused_excluded
    preview.sample = list(candidates.new.select_related("source").order_by("-id")[:sample_size])
    kinds = workflow.action_types
    if ActionType.SET_MARKETING in kinds:
        status = contacts_status_preview(contacts=candidates.new, operation=SET_MARKETING, at=now)
        preview.status_preview = status
        preview.would_become_marketing = status.would_change
        preview.cost = status.extra.get("cost")
        preview.hold_reasons = [r for r in _hold_reasons(workflow, status) if r]
    elif ActionType.SET_NON_MARKETING in kinds:
        status = contacts_status_preview(
            contacts=candidates.new, operation=SET_NON_MARKETING, at=now
        )
        preview.status_preview = status
        preview.would_schedule_non_marketing = status.would_schedule
        preview.cost = status.extra.get("cost")
    return preview


# --- writing workflows ---

WORKFLOW_FIELDS = frozenset(
    {
        "name",
        "description",
        "enabled",
        "purpose",
        "criteria",
        "actions",
        "re_enrollment",
        "schedule_minutes",
        "event_triggered",
        "max_new_marketing",
    }
)


def workflow_create(*, actor=None, **fields) -> Workflow:
    unknown = set(fields) - WORKFLOW_FIELDS
    if unknown:
        raise WorkflowError(f"Unknown workflow fields: {', '.join(sorted(unknown))}.")
    workflow = Workflow(created_by=actor if getattr(actor, "pk", None) else None, **fields)
    workflow.full_clean()
    workflow.save()
    return workflow


def workflow_update(*, workflow: Workflow, **fields) -> Workflow:
    unknown = set(fields) - WORKFLOW_FIELDS
    if unknown:
        raise WorkflowError(f"Unknown workflow fields: {', '.join(sorted(unknown))}.")
    for name, value in fields.items():
        setattr(workflow, name, value)
    workflow.full_clean()
    workflow.save()
    return workflow


def workflow_from_two_way_sync(*, app, actor=None) -> Workflow:
    """The two-way-sync rule of a connected app (DESIGN §1.3): "created by this app and meets
    these filters → marketing" is an enrollment workflow with a source filter. Created
    disabled; add the app's filters to the group, then enable it."""
    if not app.two_way_sync:
        raise WorkflowError(f"“{app.name}” has no two-way sync.")
    name = f"Two-way sync: {app.name}"
    suffix = 1
    while Workflow.objects.filter(name=name).exists():
        suffix += 1
        name = f"Two-way sync: {app.name} ({suffix})"
    return workflow_create(
        actor=actor,
        name=name,
        description=f"Contacts created by the integration “{app.name}” that meet these filters "
        "become marketing contacts.",
        purpose=WorkflowPurpose.ENROLLMENT,
        enabled=False,
        event_triggered=True,
        criteria={
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "source_integration", "operator": "EQ", "value": app.pk}
                    ]
                }
            ]
        },
        actions=[{"type": ActionType.SET_MARKETING}],
    )


# --- runs ---


def workflow_run_request(
    *,
    workflow: Workflow,
    trigger: str,
    actor=None,
    contact_ids: list[int] | None = None,
    idempotency_key: str | None = None,
    enqueue: bool = True,
) -> WorkflowRun:
    """Record a queued run and (after commit) enqueue it. A reused idempotency key answers
    the run it made, and makes no second one."""
    if idempotency_key:
        existing = WorkflowRun.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            if existing.workflow_id != workflow.pk:
                raise WorkflowError(
                    f"The idempotency key {idempotency_key!r} was used for another workflow."
                )
            return existing
    try:
        with transaction.atomic():
            run = WorkflowRun.objects.create(
                workflow=workflow,
                trigger=trigger,
                contact_ids=contact_ids,
                requested_by=actor if getattr(actor, "pk", None) else None,
                idempotency_key=idempotency_key or None,
            )
    except IntegrityError:  # the same key, concurrently
        return WorkflowRun.objects.get(idempotency_key=idempotency_key)
    if trigger not in (RunTrigger.EVENT, RunTrigger.SCHEDULE):
        # A manual run counts as the latest run (the dispatcher sets it for scheduled ones;
        # event runs, about single contacts, do not move the schedule).
        Workflow.objects.filter(pk=workflow.pk).update(last_run_at=run.created_at)
    if enqueue:
        from workflows.tasks import run_workflow

        transaction.on_commit(lambda: run_workflow.delay(run.pk))
    return run


def _fail(run: WorkflowRun, message: str) -> WorkflowRun:
    WorkflowRun.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED, error=message[:2000], finished_at=timezone.now()
    )
    run.refresh_from_db()
    return run


def workflow_run_execute(
    *, run: WorkflowRun, progress: RunProgress | None = None, at: dt.datetime | None = None
) -> WorkflowRun:
    """Run (or resume) a run. Returns at once unless it is queued, running or failed
    (a failed or killed run resumes from its cursor). Never raises for a run's own
    failure: the run records it (status failed, error)."""
    started = timezone.now()
    claimed = WorkflowRun.objects.filter(
        pk=run.pk, status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.FAILED]
    ).update(status=RunStatus.RUNNING, error="", started_at=started)
    run = WorkflowRun.objects.select_related("workflow", "requested_by").get(pk=run.pk)
    if not claimed:
        return run
    workflow = run.workflow
    if run.as_of is None:
        run.as_of = at or started
        WorkflowRun.objects.filter(pk=run.pk).update(as_of=run.as_of)
    try:
        _execute(run, workflow, progress=progress)
    except ChangeHeld as held:  # billing's guard held a chunk (a race with the preflight)
        _hold(run, billing=str(held))
    except Exception as error:  # recorded on the run; the log has the trace
        logger.exception("workflow run %s failed", run.pk)
        _fail(run, f"The run stopped on an error ({error.__class__.__name__}: {error}).")
    run.refresh_from_db()
    return run


def _hold(run: WorkflowRun, *, limit: str = "", billing: str = "") -> None:
    reasons = [r for r in (limit, billing) if r]
    WorkflowRun.objects.filter(pk=run.pk).update(
        status=RunStatus.HELD,
        hold_reason="; ".join(reasons).capitalize()[:2000],
        held_by_limit=bool(limit),
        held_by_billing=bool(billing),
        finished_at=timezone.now(),
    )


def _execute(run: WorkflowRun, workflow: Workflow, *, progress: RunProgress | None) -> None:
    now = run.as_of
    ids = run.contact_ids
    if not criteria_validate(workflow.criteria).groups:
        _finish(run)
        return
    kinds = workflow.action_types
    preflight_done = False
    if ActionType.SET_MARKETING in kinds and run.cursor == 0:
        candidates = workflow_candidates(workflow, now=now, ids=ids)
        status = contacts_status_preview(contacts=candidates.new, operation=SET_MARKETING, at=now)
        limit, billing = _hold_reasons(workflow, status)
        limit = "" if run.limit_approved else limit
        billing = "" if run.billing_approved else billing
        WorkflowRun.objects.filter(pk=run.pk).update(would_become_marketing=status.would_change)
        if limit or billing:
            _hold(run, limit=limit, billing=billing)
            return
        preflight_done = True
    for done, total, lo, hi in _run_chunks(run, workflow, now=now, ids=ids):
        _run_chunk(run, workflow, now=now, ids=ids, lo=lo, hi=hi, preflight_done=preflight_done)
        if progress:
            progress(done, total)
    _finish(run)


def _finish(run: WorkflowRun) -> None:
    finished = timezone.now()
    WorkflowRun.objects.filter(pk=run.pk).update(
        status=RunStatus.DONE, finished_at=finished, hold_reason=""
    )


def _run_chunks(run, workflow, *, now, ids):
    """(done, total, lo, hi) for each id range still to do (from the run's cursor)."""
    if ids is not None:
        if run.cursor == 0:
            yield 1, 1, 0, None
        return
    bounds = Contact.objects.order_by().aggregate(lo=Min("pk"), hi=Max("pk"))
    if bounds["lo"] is None:
        return
    first = max(bounds["lo"], run.cursor)
    starts = list(range(first, bounds["hi"] + 1, WORKFLOW_RANGE_BATCH))
    for done, lo in enumerate(starts, start=1):
        yield done, len(starts), lo, lo + WORKFLOW_RANGE_BATCH


def _in_range(queryset: QuerySet, lo: int, hi: int | None, field_name: str = "pk") -> QuerySet:
    if hi is None:
        return queryset
    return queryset.filter(**{f"{field_name}__gte": lo, f"{field_name}__lt": hi})


@dataclass(frozen=True)
class _EnrollStatement:
    """The enrollment INSERT in its three parts, kept apart so that PostgreSQL's path can
    wrap the SELECT in a CTE that also counts the matches."""

    insert: str
    select: str
    conflict: str
    params: list

    @property
    def sql(self) -> str:
        return f"{self.insert} {self.select} {self.conflict}"


def _enroll_sql(workflow: Workflow, run: WorkflowRun, new: QuerySet, now) -> _EnrollStatement:
    """One INSERT … SELECT … ON CONFLICT for the chunk's new contacts (PostgreSQL and SQLite ≥
    3.35 alike). A re-enrollment workflow revives an exited enrollment instead."""
    rows = (
        new.order_by()
        .annotate(
            _w=Value(workflow.pk, output_field=BigIntegerField()),
            _c=F("pk"),
            _r=Value(run.pk, output_field=BigIntegerField()),
            _e=Value(now, output_field=DateTimeField()),
            _m=Value(now, output_field=DateTimeField()),
            _t=Value(1, output_field=IntegerField()),
        )
        .values_list("_w", "_c", "_r", "_e", "_m", "_t")
    )
    select_sql, select_params = rows.query.sql_with_params()
    table = Enrollment._meta.db_table
    if workflow.re_enrollment:
        conflict = (
            f"DO UPDATE SET run_id = excluded.run_id, last_matched_at = excluded.last_matched_at, "
            f"exited_at = NULL, times = {table}.times + 1 WHERE {table}.exited_at IS NOT NULL"
        )
    else:
        conflict = "DO NOTHING"
    # The SELECT always has a WHERE (criteria), so SQLite parses ON CONFLICT as the upsert's.
    return _EnrollStatement(
        insert=f"INSERT INTO {table} "
        "(workflow_id, contact_id, run_id, enrolled_at, last_matched_at, times)",
        select=select_sql,
        conflict=f"ON CONFLICT (workflow_id, contact_id) {conflict}",
        params=list(select_params),
    )


def _run_chunk(
    run, workflow, *, now, ids, lo: int, hi: int | None, preflight_done: bool = False
) -> None:
    """One chunk: exits, enrollments and the database actions in ONE transaction; then the
    emails (not undoable, at most once per contact); then the cursor."""
    counts = {"matched": 0, "enrolled": 0, "changed": 0, "refused": 0}
    results: dict[str, dict] = {}
    base_ids = ids
    candidates = workflow_candidates(workflow, now=now, ids=base_ids)
    matching = _in_range(candidates.matching, lo, hi)
    # The INSERT's ON CONFLICT skips the contacts already enrolled (one probe of
    # enrollment_once each), so it reads the matching contacts without the "no active
    # enrollment" anti-join: the planner sizes that join from the enrollments' statistics,
    # which a first run makes stale as it goes (a nested loop over every enrollment per
    # contact, measured at seconds a chunk).
    insertable = (
        matching
        if candidates.excluded_q is None
        else matching.exclude(exclusion_q(workflow, now=now))
    )
    target = _in_range(
        Contact.objects.filter(workflow_enrollments__run_id=run.pk), lo, hi
    )  # enrollment_run_idx (run, contact): the contacts this run enrolled in this range
    key = f"workflow-run:{run.pk}:{lo if hi is not None else 'ids'}"
    source = workflow_status_source(workflow)
    actor = run.requested_by
    with transaction.atomic():
        if workflow.re_enrollment:
            exited = _in_range(
                Enrollment.objects.filter(workflow_id=workflow.pk, exited_at__isnull=True),
                lo,
                hi,
                "contact_id",
            )
            if ids is not None:
                exited = exited.filter(contact_id__in=ids)
            exited.exclude(contact_id__in=matching.order_by().values("pk")).update(exited_at=now)
        try:
            enroll = _enroll_sql(workflow, run, insertable, now)
        except EmptyResultSet:
            enroll = None
        if enroll and connection.vendor == "postgresql" and candidates.excluded_q is None:
            # One pass over the chunk: the INSERT's SELECT also counts the matches.
            with connection.cursor() as cursor:
                cursor.execute(
                    f"WITH m AS MATERIALIZED ({enroll.select}), "
                    f"ins AS ({enroll.insert} SELECT * FROM m {enroll.conflict} RETURNING 1) "
                    "SELECT (SELECT COUNT(*) FROM m), (SELECT COUNT(*) FROM ins)",
                    enroll.params,
                )
                counts["matched"], counts["enrolled"] = cursor.fetchone()
        else:
            tallies = matching.order_by().aggregate(
                matched=Count("pk"),
                **(
                    {"excluded": Count("pk", filter=candidates.excluded_q)}
                    if candidates.excluded_q is not None
                    else {}
                ),
            )
            counts["matched"] = tallies["matched"]
            counts["refused"] = tallies.get("excluded") or 0
            if enroll and counts["matched"]:
                with connection.cursor() as cursor:
                    cursor.execute(enroll.sql, enroll.params)
                    counts["enrolled"] = max(cursor.rowcount, 0)
        for n, action in enumerate(workflow.actions):
            kind = action["type"]
            name = f"{n + 1}:{kind}"
            if kind == ActionType.SEND_MARKETING_EMAIL:
                continue  # after commit, below
            if kind == ActionType.SET_MARKETING:
                result = contacts_set_marketing(
                    contacts=target,
                    source=source,
                    actor=actor,
                    idempotency_key=f"{key}:{name}",
                    # The preflight checked billing's guardrails over the whole run; a
                    # resumed run (no preflight) is guarded chunk by chunk again.
                    guarded=not (run.billing_approved or preflight_done),
                )
                if not result.replayed:
                    counts["changed"] += result.changed + result.cancelled
                    _add(results, name, changed=result.changed, cancelled=result.cancelled)
            elif kind == ActionType.SET_NON_MARKETING:
                result = contacts_set_non_marketing(
                    contacts=target, source=source, actor=actor, idempotency_key=f"{key}:{name}"
                )
                if not result.replayed:
                    counts["changed"] += result.scheduled
                    _add(results, name, scheduled=result.scheduled)
            elif kind == ActionType.SET_PROPERTY:
                change = contacts_set_property(
                    contacts=target, field=action["field"], value=action["value"], at=now
                )
                _add(results, name, changed=change.changed)
            elif kind in (ActionType.ADD_TO_AD_AUDIENCE, ActionType.REMOVE_FROM_AD_AUDIENCE):
                audience = AdAudience.objects.filter(pk=action["audience"]).first()
                if audience is None:
                    raise WorkflowError(
                        f"Action {n + 1}: ad audience #{action['audience']} is gone."
                    )
                if kind == ActionType.ADD_TO_AD_AUDIENCE:
                    change = ad_audience_add(audience=audience, contacts=target, actor=actor)
                    counts["refused"] += change.refused_non_marketing
                    _add(
                        results,
                        name,
                        added=change.added,
                        refused_non_marketing=change.refused_non_marketing,
                    )
                else:
                    change = ad_audience_remove(audience=audience, contacts=target, actor=actor)
                    _add(results, name, removed=change.removed)
        _add_counts(run, counts, results, cursor=None)
    for n, action in enumerate(workflow.actions):
        if action["type"] != ActionType.SEND_MARKETING_EMAIL:
            continue
        email = MarketingEmail.objects.filter(pk=action["email"]).first()
        if email is None:
            raise WorkflowError(f"Action {n + 1}: marketing email #{action['email']} is gone.")
        outcome = marketing_email_send(email=email, contacts=target, actor=actor)
        breakdown = outcome.breakdown
        refused = (
            breakdown.excluded_non_marketing
            + breakdown.excluded_unsubscribed
            + breakdown.excluded_bounced
        )
        email_results: dict[str, dict] = {}
        _add(
            email_results,
            f"{n + 1}:{ActionType.SEND_MARKETING_EMAIL}",
            sent=outcome.delivery.sent if outcome.delivery else 0,
            refused_non_marketing=breakdown.excluded_non_marketing,
            refused_unsubscribed=breakdown.excluded_unsubscribed,
            refused_bounced=breakdown.excluded_bounced,
        )
        _add_counts(run, {"refused": refused}, email_results, cursor=None)
    if hi is not None:
        WorkflowRun.objects.filter(pk=run.pk).update(cursor=hi)
    else:
        WorkflowRun.objects.filter(pk=run.pk).update(cursor=1)
    run.refresh_from_db(fields=["cursor", "results"])


def _add(results: dict, name: str, **values: int) -> None:
    entry = results.setdefault(name, {})
    for k, v in values.items():
        entry[k] = entry.get(k, 0) + v


def _add_counts(run: WorkflowRun, counts: dict, results: dict, *, cursor) -> None:
    """Add a chunk's counts to the run (F(): no lost update), merge its per-action results."""
    locked = WorkflowRun.objects.select_for_update().get(pk=run.pk)
    merged = dict(locked.results or {})
    for name, values in results.items():
        entry = dict(merged.get(name, {}))
        for k, v in values.items():
            entry[k] = entry.get(k, 0) + v
        merged[name] = entry
    WorkflowRun.objects.filter(pk=run.pk).update(
        results=merged, **{k: F(k) + v for k, v in counts.items() if v}
    )


# --- approval ---


def workflow_run_approve(*, run: WorkflowRun, user, execute: bool = True) -> WorkflowRun:
    """Release a held run: past the per-run limit it needs workflows.approve_run or
    billing.approve_overage; held by billing's guardrails, billing.approve_overage (billing's
    approval, given here by the same kind of user). Then it runs (or is queued)."""
    run = WorkflowRun.objects.get(pk=run.pk)
    if run.status != RunStatus.HELD:
        raise WorkflowError(f"Run #{run.pk} is {run.get_status_display().lower()}, not held.")
    if run.held_by_limit and not any(user.has_perm(p) for p in APPROVE_PERMISSIONS):
        raise RunNotAllowed("Approving a run past its limit needs workflows.approve_run.")
    if run.held_by_billing and not user.has_perm(BILLING_APPROVE_PERMISSION):
        raise RunNotAllowed(
            "This run is held by billing's guardrails: approving it needs billing.approve_overage."
        )
    updated = WorkflowRun.objects.filter(pk=run.pk, status=RunStatus.HELD).update(
        status=RunStatus.QUEUED,
        limit_approved=run.limit_approved or run.held_by_limit,
        billing_approved=run.billing_approved or run.held_by_billing,
        decided_by=user,
        decided_at=timezone.now(),
        finished_at=None,
    )
    logger.info("workflow run %s approved by %s (%s)", run.pk, user, run.hold_reason)
    run.refresh_from_db()
    if updated and execute:
        from workflows.tasks import run_workflow

        transaction.on_commit(lambda: run_workflow.delay(run.pk))
    return run


def workflow_run_reject(*, run: WorkflowRun, user) -> WorkflowRun:
    if not any(user.has_perm(p) for p in APPROVE_PERMISSIONS):
        raise RunNotAllowed("Rejecting a held run needs workflows.approve_run.")
    updated = WorkflowRun.objects.filter(pk=run.pk, status=RunStatus.HELD).update(
        status=RunStatus.REJECTED, decided_by=user, decided_at=timezone.now()
    )
    if not updated:
        raise WorkflowError(f"Run #{run.pk} is not held.")
    logger.info("workflow run %s rejected by %s", run.pk, user)
    run.refresh_from_db()
    return run


# --- triggers: schedule and events ---


def workflows_dispatch_due(*, now: dt.datetime | None = None) -> list[int]:
    """Queue a run of each enabled scheduled workflow whose interval has passed. Two
    dispatchers at once queue one run: last_run_at is moved by compare-and-set."""
    now = now or timezone.now()
    queued = []
    for workflow in Workflow.objects.filter(enabled=True, schedule_minutes__isnull=False):
        previous = workflow.last_run_at
        if previous and previous + dt.timedelta(minutes=workflow.schedule_minutes) > now:
            continue
        with transaction.atomic():
            claimed = Workflow.objects.filter(pk=workflow.pk, last_run_at=previous).update(
                last_run_at=now
            )
            if not claimed:
                continue
            run = workflow_run_request(workflow=workflow, trigger=RunTrigger.SCHEDULE)
            queued.append(run.pk)
    return queued


def workflows_on_contacts_changed(
    *, contact_ids: list[int], at: dt.datetime | None = None
) -> list[int]:
    """Evaluate these contacts (only these: pk IN ids, whatever the table's size) against
    every enabled event-triggered workflow. A run is recorded only for a workflow with
    something to do; re-enrollment exits are recorded on the enrollments alone."""
    now = at or timezone.now()
    runs = []
    for workflow in Workflow.objects.filter(enabled=True, event_triggered=True):
        if not criteria_validate(workflow.criteria).groups:
            continue
        if workflow.re_enrollment:
            matching = _matching(workflow, now=now, ids=contact_ids)
            Enrollment.objects.filter(
                workflow_id=workflow.pk, exited_at__isnull=True, contact_id__in=contact_ids
            ).exclude(contact_id__in=matching.order_by().values("pk")).update(exited_at=now)
        candidates = workflow_candidates(workflow, now=now, ids=contact_ids)
        if not candidates.new.exists():
            continue
        run = workflow_run_request(
            workflow=workflow, trigger=RunTrigger.EVENT, contact_ids=contact_ids, enqueue=False
        )
        runs.append(workflow_run_execute(run=run, at=now).pk)
    return runs


def workflow_run_now(
    *, workflow: Workflow, trigger: str = RunTrigger.COMMAND, actor=None, progress=None
) -> WorkflowRun:
    """Record a run and execute it in this process (the command)."""
    run = workflow_run_request(workflow=workflow, trigger=trigger, actor=actor, enqueue=False)
    return workflow_run_execute(run=run, progress=progress)
