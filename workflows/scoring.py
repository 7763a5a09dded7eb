"""Lead scoring: each engagement event's points under the enabled scoring rules (DESIGN §1.6).

The lead score of a contact is Σ over its events of Σ over the enabled rules of the
event's type of the rule's value at `now`: plain `points`; `points` when the event is in
the rule's window (occurred_at ≥ now − window days), else 0; `points × 0.5^(age days /
half-life)` for a decaying rule (age ≥ 0). The sum is rounded half up to a whole number.

The rules and the points are this app's; the score is a contact column, written only by
contacts' services (contacts.engagement.services), set-based:

* Incremental (`scores_apply_events`, on ingestion): each new event adds its rules' value
  *now* to the contact's score (`contacts_add_lead_score`, one UPDATE … FROM). That is
  exact for plain rules (the score equals the recompute's). A windowed or decaying rule's
  value changes with time (an event leaves the window, decays), which no write at
  ingestion can follow: ingestion adds its current value, and the daily recompute (task
  `workflows.recompute_scores`, beat schedule) restores exactness. Rounding: the recompute
  rounds each contact's total once, ingestion each batch's delta, so decayed fractions may
  differ by ±1 until the recompute.
* Full recompute (`scores_recompute`): per chunk of contact ids, `contacts_set_lead_scores`
  with the rules as one SQL aggregate: one UPDATE … FROM (SELECT contact_id, SUM(CASE …) …
  GROUP BY contact_id) writes the contacts whose score differs, and one UPDATE sets 0 where
  a contact has no event of a scored type. The lead score is therefore derived: a manual
  edit is overwritten by the next recompute. With no enabled rule, scoring is off and the
  recompute touches nothing (so a site that keeps scores by hand, or imported them, does
  not lose them to the nightly task).
* Shared by the workers: each chunk is one transaction, rewrites only the scores that
  differ and touches no usage counter, so chunks may run anywhere, in any order, again.
  The task `workflows.recompute_scores` reads the rules once, freezes `now`
  (`scores_recompute_chunks`) and queues one chunk task a range (`scores_recompute_chunk`),
  summed by a chord; the command runs `scores_recompute`, the same chunks in one process.
"""

import datetime as dt
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import Max, Min
from django.utils import timezone

from contacts.engagement.services import (
    EngagementIngestResult,
    contacts_add_lead_score,
    contacts_set_lead_scores,
    engagement_contacts_update,
    engagement_events_ingest,
)
from contacts.hooks import NewEngagementEvent
from contacts.models import Contact
from crm.collector import collector_paused
from workflows.models import ScoringRule
from workflows.selectors import scoring_rules_enabled

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
    """Add the new events' points to their contacts' lead scores (contacts'
    `contacts_add_lead_score`: one UPDATE … FROM). Call it once per stored event — the
    ingestion service hands back only the events it stored, so retries never score twice.
    Returns the number of contacts whose score changed. The update has a transaction of its
    own (several statements on SQLite), opened only when some score moves: with no rule for
    these events (scoring off) nothing is written."""
    if not events:
        return 0
    points = scores_event_points(events=events, now=now or timezone.now())
    if not points:
        return 0
    with transaction.atomic():
        return contacts_add_lead_score(points=points)


def engagement_ingest_and_score(
    *, items: list, now: dt.datetime | None = None
) -> tuple[EngagementIngestResult, int]:
    """Store a batch of engagement events and score the new ones, in one transaction: a
    batch is stored and scored together or not at all (a retry then finds nothing stored
    and does both). Each touched contact is written once: its `last_engaged_at` and its
    points in one UPDATE (contacts' `engagement_contacts_update`). Returns the batch's
    result and the number of contacts whose score moved."""
    now = now or timezone.now()
    # A batch is up to 10,000 items' dicts, results and rows, alive until it is stored;
    # the cycle collector would walk them again and again (crm/collector.py).
    with collector_paused(), transaction.atomic():
        batch = engagement_events_ingest(items=items, now=now, notify=False, update_contacts=False)
        points = scores_event_points(events=batch.new_events, now=now)
        engagement_contacts_update(events=batch.new_events, points=points)
    return batch, len(points)


def scores_on_engagement_recorded(events: list[NewEngagementEvent]) -> None:
    """contacts' engagement listener (registered in WorkflowsConfig.ready()): scores the
    events contacts records itself (form submissions, chats, ads leads), after commit."""
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
    """A contact's score as an SQL aggregate over its events `e`: one CASE a rule, summed,
    rounded half up (as `score_round`); and its parameters."""
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
    return f"CAST(FLOOR(SUM({' + '.join(terms)}) + 0.5) AS integer)", params


def _recompute_ids(contacts_since: dt.datetime | None) -> tuple[int, list[tuple[int, int]]]:
    """The last contact id to rescore, and the id ranges `[low, high)` of
    SCORE_RECOMPUTE_CHUNK ids that cover the contacts from the first to it (the ids below
    the first, of contacts deleted long ago, are not walked)."""
    contacts = Contact.objects.all()
    if contacts_since is not None:
        contacts = contacts.filter(last_engaged_at__gte=contacts_since)
    bounds = contacts.aggregate(first=Min("pk"), last=Max("pk"))
    first_id, last_id = bounds["first"] or 1, bounds["last"] or 0
    return last_id, [
        (low, low + SCORE_RECOMPUTE_CHUNK)
        for low in range(first_id, last_id + 1, SCORE_RECOMPUTE_CHUNK)
    ]


def scores_recompute_range(
    *,
    rules: list[ScoringRule],
    now: dt.datetime,
    id_range: tuple[int, int],
    contacts_since: dt.datetime | None = None,
    dry_run: bool = False,
) -> int:
    """Recompute the lead scores of the contacts with ids in `id_range` (`[low, high)`) under
    `rules` at `now`, in one transaction of its own (rolled back in a dry run): contacts'
    `contacts_set_lead_scores` with the rules as one aggregate. Returns the contacts whose
    score was (or would be) rewritten.

    A range is independent of every other: it rewrites only the scores that differ and
    touches no usage counter, so ranges may run in any order, on any worker, and again."""
    score_sql, score_params = _score_sql(rules, now)
    with transaction.atomic():
        changed = contacts_set_lead_scores(
            score_sql=score_sql,
            score_params=score_params,
            event_types=sorted({rule.event_type for rule in rules}),
            id_range=id_range,
            engaged_since=contacts_since,
        )
        if dry_run:
            transaction.set_rollback(True)
    return changed


def scores_recompute(
    *,
    now: dt.datetime | None = None,
    contacts_since: dt.datetime | None = None,
    dry_run: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> ScoreRecompute:
    """Rebuild lead scores from the events and the enabled rules, set-based, in this process.

    Per chunk of SCORE_RECOMPUTE_CHUNK contact ids, in its own transaction,
    `scores_recompute_range`: one UPDATE … FROM (SELECT contact_id, FLOOR(SUM(CASE …) + 0.5)
    FROM events GROUP BY contact_id) for the contacts whose score differs, and one UPDATE
    to 0 for the contacts with no event of a scored type. `contacts_since` limits it to
    contacts engaged since then (`last_engaged_at`). `dry_run` runs the same statements and
    rolls each chunk back, counting what would change. `progress(done_ids, total_ids)` is
    called after each chunk. The task `workflows.recompute_scores` shares the same chunks
    among the Celery workers (`scores_recompute_chunks`).
    """
    started = time.perf_counter()
    now = now or timezone.now()
    rules = scoring_rules_enabled()
    result = ScoreRecompute(rules=len(rules), dry_run=dry_run)
    if not rules:
        return result
    last_id, ranges = _recompute_ids(contacts_since)
    for low, high in ranges:
        result.changed += scores_recompute_range(
            rules=rules,
            now=now,
            id_range=(low, high),
            contacts_since=contacts_since,
            dry_run=dry_run,
        )
        result.chunks += 1
        if progress is not None:
            progress(min(high - 1, last_id), last_id)
    result.seconds = time.perf_counter() - started
    return result


# --- the recompute shared by several workers ---------------------------------------------
# The coordinator task freezes the recompute's input — the enabled rules, read once, and
# `now` — and queues one chunk task per id range with it, as JSON (a task's arguments): a
# rule edited meanwhile, or a chunk run late on another worker, does not change what the
# chunks compute, so the chunked recompute writes exactly what `scores_recompute` would.

_RULE_FIELDS = ("event_type", "points", "window_days", "half_life_days")


def scores_recompute_chunks(
    *,
    now: dt.datetime | None = None,
    contacts_since: dt.datetime | None = None,
    dry_run: bool = False,
) -> tuple[int, list[dict]]:
    """Split a full recompute into chunks any worker may run, in any order: the number of
    enabled rules, and one dict of keyword arguments of `scores_recompute_chunk` per id
    range (none when scoring is off or there is no contact)."""
    now = now or timezone.now()
    rules = scoring_rules_enabled()
    if not rules:
        return 0, []
    _, ranges = _recompute_ids(contacts_since)
    frozen = {
        "rules": [{field: getattr(rule, field) for field in _RULE_FIELDS} for rule in rules],
        "now": now.isoformat(),
        "contacts_since": contacts_since.isoformat() if contacts_since else None,
        "dry_run": dry_run,
    }
    return len(rules), [{**frozen, "id_range": [low, high]} for low, high in ranges]


def scores_recompute_chunk(
    *,
    rules: list[dict],
    now: str,
    id_range: list[int],
    contacts_since: str | None,
    dry_run: bool,
) -> int:
    """One chunk of `scores_recompute_chunks`: `scores_recompute_range` under the frozen
    rules and `now`. Returns the contacts whose score was (or would be) rewritten."""
    low, high = id_range
    return scores_recompute_range(
        rules=[ScoringRule(**fields) for fields in rules],
        now=dt.datetime.fromisoformat(now),
        id_range=(low, high),
        contacts_since=dt.datetime.fromisoformat(contacts_since) if contacts_since else None,
        dry_run=dry_run,
    )


def scores_recompute_total(
    *, changed: list[int], rules: int, dry_run: bool, started: float
) -> ScoreRecompute:
    """The chunked recompute's result once every chunk is done: `changed` holds each chunk's
    count, `started` the coordinator's wall-clock start (time.time(): chunks end on other
    machines)."""
    return ScoreRecompute(
        rules=rules,
        chunks=len(changed),
        changed=sum(changed),
        dry_run=dry_run,
        seconds=time.time() - started,
    )
