"""Writes of the workflows app: runs, scoring, hygiene, rotation. Status changes go through
contacts.services (the one status service)."""


# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---


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

import datetime as _dt  # noqa: E402
import math  # noqa: E402
import time as _time  # noqa: E402
from collections.abc import Callable as _Callable  # noqa: E402
from collections.abc import Sequence as _Sequence  # noqa: E402
from dataclasses import dataclass as _dataclass  # noqa: E402

from django.db import connection as _connection  # noqa: E402
from django.db import transaction as _transaction  # noqa: E402
from django.db.models import Max as _Max  # noqa: E402
from django.utils import timezone as _timezone  # noqa: E402

from contacts.hooks import NewEngagementEvent  # noqa: E402
from contacts.models import Contact as _Contact  # noqa: E402
from contacts.models import EngagementEvent as _EngagementEvent  # noqa: E402
from crm.sql import update_from_rows  # noqa: E402
from workflows.models import ScoringRule  # noqa: E402
from workflows.selectors import scoring_rules_enabled  # noqa: E402

# Contact ids one recompute statement covers: a few hundred ms on PostgreSQL at 1M
# contacts, and a transaction short enough not to hold ingestion's row locks for long.
SCORE_RECOMPUTE_CHUNK = 20_000
SECONDS_PER_DAY = 86_400.0


def score_round(value: float) -> int:
    """Half up, the same in Python and in both databases' SQL (FLOOR(x + 0.5)): PostgreSQL's
    ROUND on a double and Python's round() take ties to even, SQLite's away from zero."""
    return math.floor(value + 0.5)


def scoring_rule_value(*, rule: ScoringRule, occurred_at: _dt.datetime, now: _dt.datetime) -> float:
    """One rule's points for one event at `now` (the recompute's SQL says the same)."""
    if rule.window_days:
        return (
            float(rule.points) if occurred_at >= now - _dt.timedelta(days=rule.window_days) else 0.0
        )
    if rule.half_life_days:
        age_days = max(0.0, (now - occurred_at).total_seconds() / SECONDS_PER_DAY)
        return rule.points * 0.5 ** (age_days / rule.half_life_days)
    return float(rule.points)


def scores_event_points(
    *,
    events: _Sequence[NewEngagementEvent],
    now: _dt.datetime,
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
    *, events: _Sequence[NewEngagementEvent], now: _dt.datetime | None = None
) -> int:
    """Add the new events' points to their contacts' lead scores: one UPDATE … FROM
    (`lead_score = lead_score + points`). Call it once per stored event — the ingestion
    service hands back only the events it stored, so retries never score twice.
    Returns the number of contacts whose score changed."""
    if not events:
        return 0
    points = scores_event_points(events=events, now=now or _timezone.now())
    return update_from_rows(
        table=_Contact._meta.db_table,
        columns=[("id", "bigint"), ("points", "integer")],
        rows=sorted(points.items()),
        set_sql="lead_score = t.lead_score + u.points",
    )


def scores_on_engagement_recorded(events: list[NewEngagementEvent]) -> None:
    """contacts' engagement listener (registered in WorkflowsConfig.ready()): scores the
    events contacts records itself (form submissions, chats, ads leads), after commit."""
    with _transaction.atomic():
        scores_apply_events(events=events)


@_dataclass
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


def _score_sql(rules: list[ScoringRule], now: _dt.datetime) -> tuple[str, list]:
    """The per-event value as SQL: one CASE a rule, summed; and its parameters."""
    postgres = _connection.vendor == "postgresql"
    if postgres:
        age = "GREATEST(0.0, EXTRACT(EPOCH FROM (%s::timestamptz - e.occurred_at)) / 86400.0)"
        now_param = now
    else:  # SQLite: julianday() reads the stored UTC text; POWER is built in or Django's
        age = "MAX(0.0, julianday(%s) - julianday(e.occurred_at))"
        now_param = _connection.ops.adapt_datetimefield_value(now)
    terms, params = [], []
    for rule in rules:
        if rule.window_days:
            cutoff = now - _dt.timedelta(days=rule.window_days)
            terms.append("CASE WHEN e.type = %s AND e.occurred_at >= %s THEN %s ELSE 0.0 END")
            params += [
                rule.event_type,
                cutoff if postgres else _connection.ops.adapt_datetimefield_value(cutoff),
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
    now: _dt.datetime | None = None,
    contacts_since: _dt.datetime | None = None,
    dry_run: bool = False,
    progress: _Callable[[int, int], None] | None = None,
) -> ScoreRecompute:
    """Rebuild lead scores from the events and the enabled rules, set-based.

    Per chunk of SCORE_RECOMPUTE_CHUNK contact ids, in its own transaction: one UPDATE …
    FROM (SELECT contact_id, FLOOR(SUM(CASE …) + 0.5) FROM events GROUP BY contact_id) for the
    contacts whose score differs, and one UPDATE to 0 for the contacts with no event of a
    scored type. `contacts_since` limits it to contacts engaged since then
    (`last_engaged_at`). `dry_run` runs the same statements and rolls each chunk back,
    counting what would change. `progress(done_ids, total_ids)` is called after each chunk.
    """
    started = _time.perf_counter()
    now = now or _timezone.now()
    rules = scoring_rules_enabled()
    result = ScoreRecompute(rules=len(rules), dry_run=dry_run)
    if not rules:
        return result
    contacts = _Contact.objects.all()
    if contacts_since is not None:
        contacts = contacts.filter(last_engaged_at__gte=contacts_since)
    last_id = contacts.aggregate(last=_Max("pk"))["last"] or 0
    value_sql, value_params = _score_sql(rules, now)
    types = sorted({rule.event_type for rule in rules})
    type_marks = ", ".join(["%s"] * len(types))
    since_sql, since_params = "", []
    if contacts_since is not None:
        since_sql = " AND t.last_engaged_at >= %s"
        since_params = [
            contacts_since
            if _connection.vendor == "postgresql"
            else _connection.ops.adapt_datetimefield_value(contacts_since)
        ]
    contact_table = _Contact._meta.db_table
    event_table = _EngagementEvent._meta.db_table
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
        with _transaction.atomic(), _connection.cursor() as cursor:
            cursor.execute(scored, [*value_params, low, high, *types, *since_params])
            result.changed += cursor.rowcount
            cursor.execute(unscored, [low, high, *since_params, *types])
            result.changed += cursor.rowcount
            if dry_run:
                _transaction.set_rollback(True)
        result.chunks += 1
        if progress is not None:
            progress(min(high - 1, last_id), last_id)
    result.seconds = _time.perf_counter() - started
    return result


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
