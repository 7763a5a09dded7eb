"""Engagement events: bulk ingestion, idempotent by external id (DESIGN §1.6).

`engagement_events_ingest` is the one way events are stored: the engagement API, and
intake's form submissions, chats and ads leads (through `engagement_record`). It is
set-based — one query resolves the batch's contacts, one INSERT … ON CONFLICT
(external_id) DO NOTHING RETURNING stores the new events (PostgreSQL; elsewhere a
lookup of the known external ids and `bulk_create`), one UPDATE … FROM moves
`last_engaged_at` forward — and a retried batch, or the same external id twice in one
batch, is reported "duplicate" and stored once.

Scores are workflows' business (its scoring rules), but the lead score is a contact
column, so it is written here, set-based, by the two services workflows calls:
`contacts_add_lead_score` (the new events' points, on ingestion) and
`contacts_set_lead_scores` (the full recompute, a range of contacts at a time). The
ingestion itself never scores: the caller scores the events it gets back, or, with
`notify=True`, contacts' after-commit engagement notice tells the listeners.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from contacts.engagement.models import EngagementEvent, EngagementType
from contacts.hooks import (
    NewEngagementEvent,
    notify_engagement_recorded,
)
from contacts.models import (
    Contact,
    normalise_email,
)
from crm.instants import InstantOutOfRange, instant_utc
from crm.sql import server_bound_cursor, update_from_rows


def engagement_record(
    *, contact: Contact, type: str, at: dt.datetime, external_id: str | None, properties: dict
) -> bool:
    """One engagement event, once per external id; moves `last_engaged_at` forward.

    Intake's events (form submissions, chats, ads leads) go through the one ingestion
    service, so they are scored too: its engagement listeners run after commit.
    Returns False when the external id was already recorded (nothing written).
    """
    batch = engagement_events_ingest(
        items=[
            {
                "contact_id": contact.pk,
                "type": type,
                "occurred_at": at,
                "external_id": external_id,
                "properties": properties,
            }
        ],
        now=max(at, timezone.now()),
        external_id_required=False,
    )
    result = batch.items[0]
    if result.status == "error":  # a caller's bug (intake builds these events itself)
        raise ValueError("; ".join(result.messages))
    return result.status == "created"


ENGAGEMENT_BATCH_MAX = 10_000
# Contact ids (or emails) looked up in one query: a whole batch (under SQLite's 32,766 variables).
ENGAGEMENT_LOOKUP_CHUNK = 20_000
# Events a statement on the portable path (6 columns a row: under SQLite's variable limit).
ENGAGEMENT_PORTABLE_BATCH = 2_000
# A sender's clock may run a little ahead of ours; an event further in the future is
# refused (it would move last_engaged_at past now, and decay would count it as fresh).
ENGAGEMENT_FUTURE_TOLERANCE = dt.timedelta(hours=1)
ENGAGEMENT_ITEM_KEYS = ("contact_id", "email", "type", "occurred_at", "external_id", "properties")
_ENGAGEMENT_KEY_SET = frozenset(ENGAGEMENT_ITEM_KEYS)
_ENGAGEMENT_TYPES = frozenset(EngagementType.values)  # .values builds a list on every call
_BIGINT_MAX = 2**63 - 1


class EngagementError(Exception):
    """A batch refused as a whole (too many events)."""


@dataclass(slots=True)
class EngagementItemResult:
    index: int
    status: str  # created | duplicate | error
    contact_id: int | None = None
    external_id: str | None = None
    messages: list[str] = field(default_factory=list)


@dataclass
class EngagementIngestResult:
    items: list[EngagementItemResult]
    created: int = 0
    duplicates: int = 0
    errors: int = 0
    # The events this call stored (not the duplicates), in the batch's order.
    new_events: list[NewEngagementEvent] = field(default_factory=list)

    def by_contact(self) -> dict[int, list[NewEngagementEvent]]:
        grouped: dict[int, list[NewEngagementEvent]] = {}
        for event in self.new_events:
            grouped.setdefault(event.contact_id, []).append(event)
        return grouped


def _engagement_datetime(value) -> tuple[dt.datetime | None, str | None]:
    """A UTC datetime from a datetime or an ISO 8601 string (no offset: UTC)."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        try:  # C-speed; takes "Z", offsets, a space for "T" and a bare date (midnight)
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            return None, f"occurred_at: {value!r} is not an ISO 8601 date-time."
    elif value in (None, ""):
        return None, "occurred_at: this field is required."
    else:
        return None, "occurred_at: must be an ISO 8601 date-time string."
    try:  # in UTC (instant_utc tests tzinfo, not utcoffset(): 3 µs an event)
        return instant_utc(parsed), None
    except InstantOutOfRange as error:
        return None, f"occurred_at: {error}"


def _engagement_item_clean(
    item, *, now: dt.datetime, external_id_required: bool
) -> tuple[dict, list[str]]:
    """Check one incoming event's shape and values (no query)."""
    if not isinstance(item, dict):
        return {}, ["Each event must be an object."]
    messages: list[str] = []
    extra = item.keys() - _ENGAGEMENT_KEY_SET  # empty for nearly every item: sort only if not
    if extra:
        unknown = sorted(map(str, extra))
        messages.append(
            f"Unknown fields: {', '.join(unknown)} (allowed: {', '.join(ENGAGEMENT_ITEM_KEYS)})."
        )
    cleaned: dict = {"contact_id": None, "email": None}
    contact_id, email = item.get("contact_id"), item.get("email")
    if contact_id in (None, "") and email in (None, ""):
        messages.append("contact_id or email: one of them is required.")
    if contact_id not in (None, ""):
        if isinstance(contact_id, str) and contact_id.strip().isdigit():
            contact_id = int(contact_id)
        if isinstance(contact_id, bool) or not isinstance(contact_id, int):
            messages.append("contact_id: must be a whole number.")
        elif not 0 < contact_id <= _BIGINT_MAX:
            messages.append(f"Unknown contact id {contact_id}.")
        else:
            cleaned["contact_id"] = contact_id
    if email not in (None, ""):
        if not isinstance(email, str):
            messages.append("email: must be text.")
        else:
            cleaned["email"] = normalise_email(email)
    kind = item.get("type")
    if kind in (None, ""):
        messages.append("type: this field is required.")
    elif kind not in _ENGAGEMENT_TYPES:
        messages.append(f"type: {kind!r} is not one of {', '.join(EngagementType.values)}.")
    else:
        cleaned["type"] = kind
    occurred_at, problem = _engagement_datetime(item.get("occurred_at"))
    if problem:
        messages.append(problem)
    elif occurred_at > now + ENGAGEMENT_FUTURE_TOLERANCE:
        messages.append(f"occurred_at: {occurred_at.isoformat()} is in the future.")
    else:
        cleaned["occurred_at"] = occurred_at
    external_id = item.get("external_id")
    if external_id in (None, ""):
        cleaned["external_id"] = None
        if external_id_required:
            messages.append("external_id: this field is required (it makes a retry safe).")
    elif not isinstance(external_id, str | int) or isinstance(external_id, bool):
        messages.append("external_id: must be text.")
    elif len(str(external_id)) > 200:
        messages.append("external_id: at most 200 characters.")
    else:
        cleaned["external_id"] = str(external_id)
    properties = item.get("properties")
    if properties is None:
        cleaned["properties"] = {}
    elif not isinstance(properties, dict):
        messages.append("properties: must be an object.")
    else:
        cleaned["properties"] = properties
    return cleaned, messages


def _engagement_contacts(ids: set[int], emails: set[str]) -> tuple[set[int], dict[str, int]]:
    """Which of the batch's contact ids exist, and the contacts of its emails.

    Two lookups, each a chunk at a time (a 10,000 batch: one each): the ids by the primary
    key alone (an index-only scan: no table page is read), the emails by their unique index.
    """
    known: set[int] = set()
    id_of: dict[str, int] = {}
    table = Contact._meta.db_table
    id_list, email_list = sorted(ids), sorted(emails)
    for start in range(0, len(id_list), ENGAGEMENT_LOOKUP_CHUNK):
        chunk = id_list[start : start + ENGAGEMENT_LOOKUP_CHUNK]
        if connection.vendor == "postgresql":  # one array parameter, not 10,000 placeholders
            with server_bound_cursor() as cursor:
                cursor.execute(f"SELECT id FROM {table} WHERE id = ANY(%b::bigint[])", [chunk])
                known.update(pk for (pk,) in cursor.fetchall())
        else:
            known.update(Contact.objects.filter(pk__in=chunk).values_list("pk", flat=True))
    for start in range(0, len(email_list), ENGAGEMENT_LOOKUP_CHUNK):
        chunk = email_list[start : start + ENGAGEMENT_LOOKUP_CHUNK]
        if connection.vendor == "postgresql":
            with server_bound_cursor() as cursor:
                cursor.execute(
                    f"SELECT id, email FROM {table} WHERE email = ANY(%b::text[])", [chunk]
                )
                found = cursor.fetchall()
        else:
            found = Contact.objects.filter(email__in=chunk).values_list("pk", "email")
        id_of.update((email, pk) for pk, email in found)
    return known, id_of


def _engagement_insert(rows: list[tuple], *, now: dt.datetime) -> set[str]:
    """Store `rows` (contact_id, type, occurred_at, external_id, properties); answer the
    external ids stored now (rows without one are always stored)."""
    table = EngagementEvent._meta.db_table
    if connection.vendor == "postgresql":
        with server_bound_cursor() as cursor:
            cursor.execute(
                f"""
                INSERT INTO {table} (contact_id, type, occurred_at, external_id, properties,
                                     created_at)
                SELECT u.contact_id, u.type, u.occurred_at, u.external_id, u.properties, %b
                FROM ROWS FROM (
                    unnest(%b::bigint[]), unnest(%b::text[]), unnest(%b::timestamptz[]),
                    unnest(%b::text[]), jsonb_array_elements(%b::jsonb)
                ) AS u(contact_id, type, occurred_at, external_id, properties)
                ON CONFLICT (external_id) DO NOTHING
                RETURNING external_id
                """,
                [
                    now,
                    [row[0] for row in rows],
                    [row[1] for row in rows],
                    [row[2] for row in rows],
                    [row[3] for row in rows],
                    # The properties as one JSON array, zipped with the columns by ROWS
                    # FROM: one dumps() a batch instead of one an event (8 ms, not 37).
                    json.dumps([row[4] for row in rows]),
                ],
            )
            return {external_id for (external_id,) in cursor.fetchall() if external_id}
    # Portable: the known external ids first, then the rest in one bulk_create. A concurrent
    # writer of the same id makes the insert fail on the unique index; the caller retries.
    wanted = [row[3] for row in rows if row[3] is not None]
    known: set[str] = set()
    for start in range(0, len(wanted), ENGAGEMENT_PORTABLE_BATCH):
        known.update(
            EngagementEvent.objects.filter(
                external_id__in=wanted[start : start + ENGAGEMENT_PORTABLE_BATCH]
            ).values_list("external_id", flat=True)  # its unique index
        )
    EngagementEvent.objects.bulk_create(
        [
            EngagementEvent(
                contact_id=row[0],
                type=row[1],
                occurred_at=row[2],
                external_id=row[3],
                properties=row[4],
                created_at=now,
            )
            for row in rows
            if row[3] is None or row[3] not in known
        ],
        batch_size=ENGAGEMENT_PORTABLE_BATCH,
    )
    return {external_id for external_id in wanted if external_id not in known}


def engagement_contacts_update(
    *, events: list[NewEngagementEvent], points: dict[int, int] | None = None
) -> int:
    """For the new events' contacts, in one UPDATE … FROM: `last_engaged_at =
    GREATEST(last_engaged_at, newest event)` (it only moves forward), and, given `points`
    (a contact's lead-score points for these events: workflows' scoring rules),
    `lead_score = lead_score + points` in the same statement. Returns the contacts written.
    """
    points = points or {}
    newest: dict[int, dt.datetime] = {}
    for event in events:
        if event.contact_id not in newest or newest[event.contact_id] < event.occurred_at:
            newest[event.contact_id] = event.occurred_at
    moved = "t.last_engaged_at IS NULL OR t.last_engaged_at < u.at"
    # GREATEST ignores NULL on PostgreSQL but not on SQLite, hence the CASE; the WHERE
    # skips the rows that would not change (no write, no index churn).
    engaged = f"last_engaged_at = CASE WHEN {moved} THEN u.at ELSE t.last_engaged_at END"
    if not points:
        return update_from_rows(
            table=Contact._meta.db_table,
            columns=[("id", "bigint"), ("at", "timestamptz")],
            rows=sorted(newest.items()),
            set_sql=engaged,
            where_sql=moved,
        )
    return update_from_rows(
        table=Contact._meta.db_table,
        columns=[("id", "bigint"), ("at", "timestamptz"), ("points", "integer")],
        rows=[(pk, at, points.get(pk, 0)) for pk, at in sorted(newest.items())],
        set_sql=f"{engaged}, lead_score = t.lead_score + u.points",
        where_sql=f"({moved}) OR u.points <> 0",
    )


def contacts_add_lead_score(*, points: dict[int, int]) -> int:
    """Add `points[contact_id]` to each contact's lead score, in one UPDATE … FROM
    (`lead_score = lead_score + points`); zero points are skipped. Returns the number of
    contacts whose score changed (a contact that no longer exists is not counted)."""
    rows = sorted((pk, n) for pk, n in points.items() if n)
    return update_from_rows(
        table=Contact._meta.db_table,
        columns=[("id", "bigint"), ("points", "integer")],
        rows=rows,
        set_sql="lead_score = t.lead_score + u.points",
    )


def _sql_instant(value: dt.datetime):
    """A datetime parameter as the ORM stores it (text in UTC on SQLite)."""
    if connection.vendor == "postgresql":
        return value
    return connection.ops.adapt_datetimefield_value(value)


def contacts_set_lead_scores(
    *,
    score_sql: str,
    score_params: Sequence,
    event_types: Sequence[str],
    id_range: tuple[int, int],
    engaged_since: dt.datetime | None = None,
) -> int:
    """Set the lead score of the contacts with ids in `id_range` (`[low, high)`) from their
    engagement events, set-based: two statements, no contact read into Python.

    `score_sql` (with `score_params`) is an SQL aggregate over one contact's events —
    the rows of the events table aliased `e`, only those of `event_types` — that gives its
    integer score, e.g. `CAST(FLOOR(SUM(CASE WHEN e.type = %s THEN %s ELSE 0 END) + 0.5)
    AS integer)`. One UPDATE … FROM (SELECT contact_id, <score_sql> … GROUP BY contact_id)
    writes the contacts whose score differs; one UPDATE sets 0 where a contact has no
    event of those types. `engaged_since` limits both to contacts engaged since then
    (`last_engaged_at`). The two statements commit together, in the caller's transaction
    when there is one (a dry run rolls it back to count what would change). Returns the
    contacts rewritten.
    """
    if not event_types:
        raise ValueError("contacts_set_lead_scores needs at least one event type.")
    low, high = id_range
    types = sorted(set(event_types))
    type_marks = ", ".join(["%s"] * len(types))
    since_sql, since_params = "", []
    if engaged_since is not None:
        since_sql = " AND t.last_engaged_at >= %s"
        since_params = [_sql_instant(engaged_since)]
    contact_table = Contact._meta.db_table
    event_table = EngagementEvent._meta.db_table
    # engagement_contact_idx (contact, type, occurred_at): a range of contacts' events of
    # the given types, read from the index in contact order (GROUP BY needs no sort).
    scored = f"""
        UPDATE {contact_table} AS t SET lead_score = s.score
        FROM (
            SELECT e.contact_id AS id, {score_sql} AS score
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
    changed = 0
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(scored, [*score_params, low, high, *types, *since_params])
        changed += cursor.rowcount
        cursor.execute(unscored, [low, high, *since_params, *types])
        changed += cursor.rowcount
    return changed


def engagement_events_ingest(
    *,
    items: list,
    now: dt.datetime | None = None,
    external_id_required: bool = True,
    notify: bool = True,
    update_contacts: bool = True,
) -> EngagementIngestResult:
    """Store up to ENGAGEMENT_BATCH_MAX engagement events, once per external id.

    Each item: `contact_id` or `email` (both: they must name the same contact), `type`
    (an `EngagementType`), `occurred_at` (ISO 8601 or a datetime; without an offset: UTC;
    not more than ENGAGEMENT_FUTURE_TOLERANCE ahead of `now`), `external_id` (required
    unless `external_id_required=False`) and `properties` (an object). Each item gets a
    result: `created`, `duplicate` (the external id is stored already, or earlier in this
    batch) or `error` with messages; the good items are stored whatever the bad ones.
    An unknown contact is an error: events never create contacts.

    Scoring belongs to workflows, which contacts does not import. `notify=True` runs
    contacts' engagement listeners after commit with the new events (workflows scores
    them there). A caller that composes both apps (the engagement API) passes
    `notify=False` and scores `new_events` itself in the same transaction; with
    `update_contacts=False` it also writes the contacts itself, `last_engaged_at` and the
    points together, with one `engagement_contacts_update(events=…, points=…)`.
    """
    if len(items) > ENGAGEMENT_BATCH_MAX:
        raise EngagementError(
            f"At most {ENGAGEMENT_BATCH_MAX:,} events a request; got {len(items):,}."
        )
    now = now or timezone.now()
    results: list[EngagementItemResult] = []
    valid: list[tuple[int, dict]] = []
    for index, item in enumerate(items):
        cleaned, messages = _engagement_item_clean(
            item, now=now, external_id_required=external_id_required
        )
        raw_id = item.get("external_id") if isinstance(item, dict) else None
        results.append(
            EngagementItemResult(
                index=index,
                status="error" if messages else "created",
                external_id=cleaned.get("external_id")
                or (str(raw_id)[:200] if raw_id not in (None, "") else None),
                messages=messages,
            )
        )
        if not messages:
            valid.append((index, cleaned))
    known_ids, id_of = _engagement_contacts(
        {c["contact_id"] for _, c in valid if c["contact_id"]},
        {c["email"] for _, c in valid if c["email"]},
    )
    rows: list[tuple] = []
    first_of: dict[str, int] = {}
    for index, cleaned in valid:
        result = results[index]
        contact_id, email = cleaned["contact_id"], cleaned["email"]
        if contact_id is not None:
            if contact_id not in known_ids:
                result.status, result.messages = "error", [f"Unknown contact id {contact_id}."]
                continue
            if email is not None and id_of.get(email) != contact_id:
                result.status, result.messages = (
                    "error",
                    [f"contact_id {contact_id} and email {email} are different contacts."],
                )
                continue
        else:
            contact_id = id_of.get(email)
            if contact_id is None:
                result.status, result.messages = "error", [f"No contact with email {email}."]
                continue
        result.contact_id = contact_id
        external_id = cleaned["external_id"]
        if external_id is not None:
            if external_id in first_of:
                result.status = "duplicate"
                result.messages = [f"The same external_id as item {first_of[external_id]}."]
                continue
            first_of[external_id] = index
        rows.append(
            (contact_id, cleaned["type"], cleaned["occurred_at"], external_id,
             cleaned["properties"], index)
        )  # fmt: skip
    # External ids in one order for every writer: two batches sharing ids wait on each
    # other's unique-index entries in the same order, so they cannot deadlock.
    rows.sort(key=lambda row: (row[3] is None, row[3] or ""))
    for attempt in range(3):
        try:
            with transaction.atomic():
                stored = _engagement_insert([row[:5] for row in rows], now=now)
                new_rows = [row for row in rows if row[3] is None or row[3] in stored]
                new_events = [
                    NewEngagementEvent(contact_id=row[0], type=row[1], occurred_at=row[2])
                    for row in sorted(new_rows, key=lambda row: row[5])
                ]
                if update_contacts:
                    engagement_contacts_update(events=new_events)
            break
        except IntegrityError:  # portable path: a concurrent writer stored one of our ids
            if attempt == 2:
                raise
    new_indexes = {row[5] for row in new_rows}
    batch = EngagementIngestResult(items=results, new_events=new_events)
    for row in rows:
        if row[5] not in new_indexes:
            result = results[row[5]]
            result.status, result.messages = "duplicate", ["Already recorded."]
    for result in results:
        if result.status == "created":
            batch.created += 1
        elif result.status == "duplicate":
            batch.duplicates += 1
        else:
            batch.errors += 1
    if notify and new_events:
        transaction.on_commit(lambda: notify_engagement_recorded(new_events))
    return batch
