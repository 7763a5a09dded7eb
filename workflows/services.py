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
