"""Writes to contacts, and the one marketing-status service (DESIGN §1.2).

Every status change — a person, a bulk action, the API, an import, a form, a
workflow, the rollover — goes through `contacts_set_marketing`,
`contacts_set_non_marketing`, `contacts_delete` or `contacts_rollover`. Each call:

1. takes the usage lock (`UsageState`, one row) so changes and their counters
   are serialised and the change clock never runs backwards;
2. answers a retried idempotency key with the stored result, changing nothing;
3. works set-based, chunk by chunk: on PostgreSQL one statement a chunk
   (UPDATE … RETURNING feeding INSERT … SELECT into the ledger), elsewhere three
   (count, INSERT … SELECT, UPDATE) — never a save() per contact;
4. updates the period's live count and running peak with F()/GREATEST in the
   same transaction, O(1) however many contacts exist.
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import hashlib
import io
import json
import logging
import re
import secrets
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

from django.conf import settings
from django.core.exceptions import EmptyResultSet, ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Max, Min, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import Greatest
from django.utils import timezone

from contacts.hooks import (
    GuardRequest,
    NewEngagementEvent,
    UsageChange,
    check_guards,
    contacts_changed,
    notify_engagement_recorded,
    notify_usage_changed,
    preview_extras,
)
from contacts.models import (
    AdAccount,
    AdLead,
    Chatflow,
    ConnectedApp,
    Contact,
    ContactImport,
    ContactType,
    EngagementType,
    Form,
    FormSubmission,
    ImportedContact,
    ImportRowError,
    ImportStatus,
    LeadStatus,
    LedgerAction,
    LedgerStatus,
    LifecycleStage,
    MarketingStatus,
    PeriodUsage,
    Source,
    SourceKind,
    StatusChange,
    StatusChangeRequest,
    StatusSourceType,
    UsageState,
    normalise_email,
)
from crm import jobs
from crm.calendar import BillingCalendar
from crm.models import Account
from crm.sql import server_bound_cursor

logger = logging.getLogger(__name__)

# Ids per statement when the caller hands over a list (well under SQLite's variable limit).
STATUS_ID_BATCH = 5_000
# Width of the id range a statement covers when the caller hands over a queryset.
STATUS_RANGE_BATCH = 50_000

SET_MARKETING = "set_marketing"
SET_NON_MARKETING = "set_non_marketing"
DELETE = "delete"
ROLLOVER = "rollover"

Target = Contact | int | Iterable[int] | QuerySet
Progress = Callable[[int, int], None]


class StatusError(Exception):
    """A status change that cannot be made; the message is meant for the user."""


class LockedSourceError(StatusError):
    pass


class IdempotencyConflict(StatusError):
    pass


class SourceInUse(StatusError):
    """A source that contacts still record cannot be deleted."""


class ChangeHeld(StatusError):
    """A guard (billing's guardrails) held the change for approval; nothing was written."""


@dataclass(frozen=True)
class StatusSource:
    """Who or what asks for a change: recorded on the ledger and the contact."""

    type: str
    id: str = ""
    name: str = ""

    def __post_init__(self):
        if self.type not in StatusSourceType.values:
            raise StatusError(f"Unknown status source type {self.type!r}.")
        object.__setattr__(self, "id", str(self.id or ""))


@dataclass
class StatusChangeResult:
    operation: str
    idempotency_key: str
    requested_at: dt.datetime
    matched: int = 0
    changed: int = 0  # became marketing now (set marketing), or were deleted
    already: int = 0  # already in the asked-for state
    scheduled: int = 0  # downgrades scheduled for `effective_from`
    cancelled: int = 0  # pending downgrades cancelled
    applied: int = 0  # pending downgrades applied by a rollover
    effective_from: dt.datetime | None = None
    live_count: int = 0
    peak_count: int = 0
    replayed: bool = False

    def as_dict(self) -> dict:
        data = asdict(self)
        for key in ("requested_at", "effective_from"):
            data[key] = data[key].isoformat() if data[key] else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> StatusChangeResult:
        data = dict(data)
        for key in ("requested_at", "effective_from"):
            data[key] = dt.datetime.fromisoformat(data[key]) if data.get(key) else None
        return cls(**data)


@dataclass
class StatusPreview:
    """What a change would do, computed without writing."""

    operation: str
    at: dt.datetime
    matched: int = 0
    would_change: int = 0
    would_schedule: int = 0
    would_cancel: int = 0
    already: int = 0
    effective_from: dt.datetime | None = None
    live_count: int = 0
    live_after: int = 0
    peak_count: int = 0
    peak_after: int = 0
    period_start: dt.datetime | None = None
    period_end: dt.datetime | None = None
    extra: dict = field(default_factory=dict)


# --- SQL assembly ------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _sql(template: str, **fragments: tuple[str, list]) -> tuple[str, list]:
    """Fill {name} slots with (sql, params) fragments, keeping params in slot order."""
    params: list = []

    def fill(match: re.Match) -> str:
        text, fragment_params = fragments[match.group(1)]
        params.extend(fragment_params)
        return text

    return _PLACEHOLDER.sub(fill, template), params


def _p(value) -> tuple[str, list]:
    """One parameter as a fragment; datetimes adapted the way the ORM stores them."""
    if isinstance(value, dt.datetime):
        value = connection.ops.adapt_datetimefield_value(value)
    return "%s", [value]


_CONTACT = Contact._meta.db_table
_LEDGER = StatusChange._meta.db_table
_LEDGER_COLUMNS = (
    "contact_id, request_id, action, from_status, to_status, requested_at, effective_at, "
    "delta, source_type, source_id, source_name, actor_id"
)
_M = MarketingStatus.MARKETING.value
_N = MarketingStatus.NON_MARKETING.value


@dataclass(frozen=True)
class _Operation:
    """How one operation reads the old status (s, u) and writes the new."""

    needs_change: tuple[str, list]  # predicate over s (status) and u (until)
    action: tuple[str, list]
    from_status: tuple[str, list]
    to_status: tuple[str, list]
    effective_at: tuple[str, list]
    delta: tuple[str, list]
    assignments: tuple[str, list]  # SET clause for the contacts table
    # The target's own filter already says which rows change, and the SET leaves
    # marketing_until (u) alone: the PostgreSQL path updates the rows straight from
    # that filter, with no read of the old values first (the rollover).
    in_place: bool = False


def _operation(
    op: str, *, now: dt.datetime, until: dt.datetime | None, source: StatusSource
) -> _Operation:
    reason = _sql(
        "marketing_reason_type = {t}, marketing_reason_id = {i}, marketing_reason_name = {n}, "
        "marketing_changed_at = {now}, updated_at = {now}",
        t=_p(source.type),
        i=_p(source.id),
        n=_p(source.name[:200]),
        now=_p(now),
    )
    pending = _sql(f"(s = '{_M}' AND u > {{now}})", now=_p(now))
    if op == SET_MARKETING:
        return _Operation(
            needs_change=(f"(s <> '{_M}' OR u IS NOT NULL)", []),
            action=_sql(
                f"CASE WHEN {{pending}} THEN '{LedgerAction.DOWNGRADE_CANCELLED.value}' "
                f"ELSE '{LedgerAction.UPGRADE.value}' END",
                pending=pending,
            ),
            from_status=(f"'{_N}'", []),
            to_status=(f"'{_M}'", []),
            effective_at=_sql(
                "CASE WHEN {pending} THEN u ELSE {now} END", pending=pending, now=_p(now)
            ),
            delta=("1", []),
            assignments=_sql(
                f"marketing_status = '{_M}', marketing_until = NULL, {{reason}}", reason=reason
            ),
        )
    if op == SET_NON_MARKETING:
        return _Operation(
            needs_change=(f"(s = '{_M}' AND u IS NULL)", []),
            action=(f"'{LedgerAction.DOWNGRADE_SCHEDULED.value}'", []),
            from_status=(f"'{_M}'", []),
            to_status=(f"'{_N}'", []),
            effective_at=_p(until),
            delta=("-1", []),
            assignments=_sql("marketing_until = {until}, {reason}", until=_p(until), reason=reason),
        )
    if op == ROLLOVER:
        return _Operation(
            needs_change=_sql(f"(s = '{_M}' AND u <= {{asof}})", asof=_p(now)),
            action=(f"'{LedgerAction.ROLLOVER.value}'", []),
            from_status=(f"'{_M}'", []),
            to_status=(f"'{_N}'", []),
            effective_at=("u", []),
            delta=("0", []),
            # marketing_until stays as "non-marketing since": it is indexed, and leaving
            # every indexed column alone lets PostgreSQL update the rows in place (HOT).
            assignments=_sql(
                f"marketing_status = '{_N}', updated_at = {{now}}", now=_p(timezone.now())
            ),
            in_place=True,
        )
    raise ValueError(op)


# Deleting writes two kinds of rows: a pending downgrade is cancelled (+1 at its date) and the
# billable contact leaves (-1 now), so a replay never counts the contact twice or not at all.
def _delete_rows(now: dt.datetime) -> list[_Operation]:
    return [
        _Operation(
            needs_change=_sql(f"(s = '{_M}' AND u > {{now}})", now=_p(now)),
            action=(f"'{LedgerAction.DOWNGRADE_CANCELLED.value}'", []),
            from_status=(f"'{_N}'", []),
            to_status=(f"'{LedgerStatus.NONE.value}'", []),
            effective_at=("u", []),
            delta=("1", []),
            assignments=("", []),
        ),
        _Operation(
            needs_change=_sql(f"(s = '{_M}' AND (u IS NULL OR u > {{now}}))", now=_p(now)),
            action=(f"'{LedgerAction.DELETED.value}'", []),
            from_status=(f"'{_M}'", []),
            to_status=(f"'{LedgerStatus.NONE.value}'", []),
            effective_at=_p(now),
            delta=("-1", []),
            assignments=("", []),
        ),
    ]


def _ledger_select(
    spec: _Operation, *, request_id: int, now, source: StatusSource, actor_id
) -> tuple[str, list]:
    return _sql(
        "SELECT id, {req}, {action}, {from_status}, {to_status}, {now}, {effective_at}, {delta}, "
        "{st}, {si}, {sn}, {actor}",
        req=_p(request_id),
        action=spec.action,
        from_status=spec.from_status,
        to_status=spec.to_status,
        now=_p(now),
        effective_at=spec.effective_at,
        delta=spec.delta,
        st=_p(source.type),
        si=_p(source.id),
        sn=_p(source.name[:200]),
        actor=_p(actor_id),
    )


def _chunk_sql(chunk: QuerySet) -> tuple[str, list]:
    sql, params = chunk.order_by().values("pk").query.sql_with_params()
    return sql, list(params)


def _run_chunk_postgresql(chunk: _Chunk, spec: _Operation, ledger_select) -> dict[str, int]:
    """One statement: read the chunk's rows, UPDATE … RETURNING into INSERT … SELECT.

    `target` is the chunk's own query (no self-join of contacts), and the UPDATE is
    bounded to the chunk's id range, so the planner walks the primary key instead of
    hashing the whole table.
    """
    if spec.in_place:
        return _run_chunk_in_place(chunk, spec, ledger_select)
    rows = chunk.queryset.order_by().values_list("pk", "marketing_status", "marketing_until")
    rows_sql, rows_params = rows.query.sql_with_params()
    sql, params = _sql(
        f"""
        WITH target AS MATERIALIZED (
            SELECT id, s, u FROM ({{rows}}) AS t0 (id, s, u)
        ),
        upd AS (
            UPDATE {_CONTACT} c SET {{assignments}}
            FROM target t
            WHERE c.id = t.id AND c.id >= {{lo}} AND c.id < {{hi}} AND {{needs}}
            RETURNING c.id, t.s, t.u
        ),
        ins AS (
            INSERT INTO {_LEDGER} ({_LEDGER_COLUMNS})
            {{ledger}} FROM upd
            RETURNING action
        )
        SELECT 'matched', COUNT(*) FROM target
        UNION ALL SELECT action, COUNT(*) FROM ins GROUP BY action
        """,
        rows=(rows_sql, list(rows_params)),
        assignments=spec.assignments,
        lo=_p(chunk.lo),
        hi=_p(chunk.hi),
        needs=spec.needs_change,  # s and u are target's columns: the contacts table has neither
        ledger=ledger_select,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {action: count for action, count in cursor.fetchall()}


def _run_chunk_in_place(chunk: _Chunk, spec: _Operation, ledger_select) -> dict[str, int]:
    """UPDATE … WHERE <the chunk's own filter> RETURNING into INSERT … SELECT.

    About a quarter cheaper than reading the rows first: no join back to the table.
    Only for a filter on the contacts table's own columns (no joins).
    """
    query = chunk.queryset.order_by().query
    if len(query.alias_map) > 1:
        raise ValueError("an in-place chunk filters on the contacts table alone")
    where, where_params = query.get_compiler(connection=connection).compile(query.where)
    sql, params = _sql(
        f"""
        WITH upd AS (
            UPDATE {_CONTACT} SET {{assignments}}
            WHERE {{where}}
            RETURNING id, marketing_until AS u
        ),
        ins AS (
            INSERT INTO {_LEDGER} ({_LEDGER_COLUMNS})
            {{ledger}} FROM upd
            RETURNING action
        )
        SELECT 'matched', COUNT(*) FROM ins
        UNION ALL SELECT action, COUNT(*) FROM ins GROUP BY action
        """,
        assignments=spec.assignments,
        where=(where, list(where_params)),
        ledger=ledger_select,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {action: count for action, count in cursor.fetchall()}


def _run_chunk_portable(
    chunk: QuerySet, specs: list[_Operation], ledger_selects, *, update: bool
) -> int:
    """Count, then INSERT … SELECT the ledger rows, then UPDATE: a fixed three statements."""
    source_rows = _sql(
        f"(SELECT id, marketing_status AS s, marketing_until AS u FROM {_CONTACT} WHERE id IN ({{chunk}})) t",
        chunk=_chunk_sql(chunk),
    )
    with connection.cursor() as cursor:
        sql, params = _sql("SELECT COUNT(*) FROM {rows}", rows=source_rows)
        cursor.execute(sql, params)
        matched = cursor.fetchone()[0]
        for spec, ledger_select in zip(specs, ledger_selects, strict=True):
            sql, params = _sql(
                f"INSERT INTO {_LEDGER} ({_LEDGER_COLUMNS}) {{ledger}} FROM {{rows}} WHERE {{needs}}",
                ledger=ledger_select,
                rows=source_rows,
                needs=spec.needs_change,
            )
            cursor.execute(sql, params)
        if update:
            spec = specs[0]
            sql, params = _sql(
                f"UPDATE {_CONTACT} SET {{assignments}} WHERE id IN "
                f"(SELECT id FROM {{rows}} WHERE {{needs}})",
                assignments=spec.assignments,
                rows=source_rows,
                needs=spec.needs_change,
            )
            cursor.execute(sql, params)
    return matched


def _use_postgresql_fast_path() -> bool:
    return connection.vendor == "postgresql" and not _FORCE_PORTABLE


_FORCE_PORTABLE = False  # tests flip it to run the portable path on PostgreSQL too


# --- targets and chunks ------------------------------------------------------


def _as_queryset_or_ids(contacts: Target) -> QuerySet | list[int]:
    if isinstance(contacts, Contact):
        return [contacts.pk]
    if isinstance(contacts, int):
        return [contacts]
    if isinstance(contacts, QuerySet):
        if contacts.model is not Contact:
            raise TypeError("contacts must be a queryset of Contact")
        return contacts
    return sorted({int(pk) for pk in contacts})


@dataclass(frozen=True)
class _Chunk:
    """The contacts of one statement: a queryset whose ids all lie in [lo, hi)."""

    queryset: QuerySet
    lo: int
    hi: int


def _chunks(target: QuerySet | list[int]) -> list[_Chunk]:
    if isinstance(target, list):
        return [
            _Chunk(Contact.objects.filter(pk__in=batch), batch[0], batch[-1] + 1)
            for batch in (
                target[i : i + STATUS_ID_BATCH] for i in range(0, len(target), STATUS_ID_BATCH)
            )
        ]
    bounds = target.order_by().aggregate(lo=Min("pk"), hi=Max("pk"))
    if bounds["lo"] is None:
        return []
    return [
        _Chunk(
            target.filter(pk__gte=lo, pk__lt=lo + STATUS_RANGE_BATCH), lo, lo + STATUS_RANGE_BATCH
        )
        for lo in range(bounds["lo"], bounds["hi"] + 1, STATUS_RANGE_BATCH)
    ]


def _fingerprint(
    operation: str, source: StatusSource, target: QuerySet | list[int], extra: str = ""
) -> str:
    if isinstance(target, list):
        described = ",".join(map(str, target))
    else:
        try:
            sql, params = target.order_by().values("pk").query.sql_with_params()
            described = f"{sql}|{params!r}"
        except EmptyResultSet:  # e.g. pk__in=[]: matches nothing
            described = "nothing"
    raw = f"{operation}|{source.type}|{source.id}|{described}|{extra}"
    return hashlib.sha256(raw.encode()).hexdigest()


# --- the usage lock and the period counters ----------------------------------


TICK = dt.timedelta(microseconds=1)


def _lock_usage(
    at: dt.datetime | None, calendar: BillingCalendar
) -> tuple[UsageState, dt.datetime]:
    """Take the usage lock and return this change's instant.

    Instants strictly increase from one change to the next, and never fall exactly
    on a period start (that instant belongs to the boundary's own downgrades). So
    the ledger's order is the order the counters saw, and a replay grouped by
    instant sees exactly the counts the counters saw.
    """
    state, _ = UsageState.objects.select_for_update().get_or_create(pk=1)
    now = at or timezone.now()
    if state.last_change_at and now <= state.last_change_at:
        now = state.last_change_at + TICK
    if calendar.period_bounds(now)[0] == now:
        now += TICK
    return state, now


def period_usage_at(now: dt.datetime, calendar: BillingCalendar) -> PeriodUsage:
    """The counter row of the period containing `now`, opening any periods since the last one.

    Call with the usage lock held. A period opens with the previous period's live
    count less the downgrades scheduled for its end.
    """
    start, end = calendar.period_bounds(now)
    row = PeriodUsage.objects.filter(period_start=start).first()
    if row is not None:
        return row
    latest = PeriodUsage.objects.filter(period_start__lt=start).order_by("-period_start").first()
    if latest is None:
        return PeriodUsage.objects.create(period_start=start, period_end=end)
    opening = latest.live_count - latest.scheduled_downgrades
    next_start = latest.period_end
    while next_start <= start:
        next_end = calendar.following(next_start)
        row = PeriodUsage.objects.create(
            period_start=next_start,
            period_end=next_end,
            opening_count=opening,
            live_count=opening,
            peak_count=opening,
        )
        next_start = next_end
    return row


def _begin(
    *,
    operation: str,
    source: StatusSource,
    actor,
    idempotency_key: str | None,
    fingerprint: str,
    now: dt.datetime,
) -> tuple[StatusChangeRequest | None, StatusChangeResult | None]:
    if idempotency_key:
        existing = StatusChangeRequest.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            if existing.fingerprint != fingerprint or existing.operation != operation:
                raise IdempotencyConflict(
                    f"The idempotency key {idempotency_key!r} was already used for a different request."
                )
            result = StatusChangeResult.from_dict(existing.result)
            result.replayed = True
            return None, result
    request = StatusChangeRequest.objects.create(
        idempotency_key=idempotency_key or f"auto:{uuid.uuid4()}",
        operation=operation,
        fingerprint=fingerprint,
        source_type=source.type,
        source_id=source.id,
        source_name=source.name[:200],
        actor=actor if getattr(actor, "pk", None) else None,
        requested_at=now,
    )
    return request, None


def _finish(
    *,
    request: StatusChangeRequest,
    state: UsageState,
    usage: PeriodUsage,
    result: StatusChangeResult,
    live_delta: int,
    scheduled_delta: int,
) -> StatusChangeResult:
    if live_delta or scheduled_delta:
        PeriodUsage.objects.filter(pk=usage.pk).update(
            live_count=F("live_count") + live_delta,
            peak_count=Greatest(F("peak_count"), F("live_count") + live_delta),
            scheduled_downgrades=F("scheduled_downgrades") + scheduled_delta,
        )
        usage.refresh_from_db()
    result.live_count = usage.live_count
    result.peak_count = usage.peak_count
    state.last_change_at = result.requested_at
    state.save(update_fields=["last_change_at"])
    request.result = result.as_dict()
    request.save(update_fields=["result"])
    if live_delta or scheduled_delta:
        change = UsageChange(
            operation=result.operation,
            at=result.requested_at,
            period_start=usage.period_start,
            live_count=usage.live_count,
            peak_count=usage.peak_count,
            became_marketing=max(live_delta, 0),
        )
        transaction.on_commit(lambda: notify_usage_changed(change))
    return result


def _change_status(
    operation: str,
    *,
    contacts: Target,
    source: StatusSource,
    actor,
    idempotency_key: str | None,
    at: dt.datetime | None,
    progress: Progress | None,
    guarded: bool = False,
) -> StatusChangeResult:
    target = _as_queryset_or_ids(contacts)
    fingerprint = _fingerprint(operation, source, target)
    calendar = BillingCalendar.for_account()
    if guarded and operation == SET_MARKETING:
        idempotency_key = idempotency_key or f"auto:{uuid.uuid4()}"
        if not StatusChangeRequest.objects.filter(idempotency_key=idempotency_key).exists():
            preview = contacts_status_preview(contacts=target, operation=operation, at=at)
            reason = check_guards(
                GuardRequest(
                    operation=operation,
                    contacts=target,
                    preview=preview,
                    source=source,
                    actor=actor,
                    idempotency_key=idempotency_key,
                )
            )
            if reason:
                raise ChangeHeld(reason)
    with transaction.atomic():
        state, now = _lock_usage(at, calendar)
        request, replay = _begin(
            operation=operation,
            source=source,
            actor=actor,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            now=now,
        )
        if replay is not None:
            return replay
        usage = period_usage_at(now, calendar)
        until = usage.period_end
        if operation == DELETE:
            specs_for_chunk = lambda: _delete_rows(now)  # noqa: E731
        else:
            specs_for_chunk = lambda: [_operation(operation, now=now, until=until, source=source)]  # noqa: E731
        counts = _apply(
            target,
            specs_for_chunk,
            now=now,
            source=source,
            request_id=request.pk,
            actor_id=request.actor_id,
            delete=operation == DELETE,
            progress=progress,
        )
        result = StatusChangeResult(
            operation=operation,
            idempotency_key=request.idempotency_key,
            requested_at=now,
            matched=counts.get("matched", 0),
        )
        upgraded = counts.get(LedgerAction.UPGRADE, 0)
        cancelled = counts.get(LedgerAction.DOWNGRADE_CANCELLED, 0)
        scheduled = counts.get(LedgerAction.DOWNGRADE_SCHEDULED, 0)
        deleted = counts.get(LedgerAction.DELETED, 0)
        if operation == SET_MARKETING:
            result.changed, result.cancelled = upgraded, cancelled
            result.already = result.matched - upgraded - cancelled
        elif operation == SET_NON_MARKETING:
            result.scheduled = scheduled
            result.already = result.matched - scheduled
            result.effective_from = until if scheduled else None
        elif operation == DELETE:
            result.changed = result.matched
            result.cancelled = cancelled
        return _finish(
            request=request,
            state=state,
            usage=usage,
            result=result,
            live_delta=upgraded - deleted,
            scheduled_delta=scheduled - cancelled,
        )


def _apply(
    target,
    specs_for_chunk: Callable[[], list[_Operation]],
    *,
    now,
    source: StatusSource,
    request_id: int,
    actor_id,
    delete: bool,
    progress: Progress | None,
) -> dict[str, int]:
    """Run the operation chunk by chunk; return the matched count and ledger rows by action."""
    totals: dict[str, int] = {"matched": 0}
    chunks = _chunks(target)
    fast = not delete and _use_postgresql_fast_path()
    for done, chunk in enumerate(chunks, start=1):
        specs = specs_for_chunk()
        selects = [
            _ledger_select(spec, request_id=request_id, now=now, source=source, actor_id=actor_id)
            for spec in specs
        ]
        if fast:
            for key, value in _run_chunk_postgresql(chunk, specs[0], selects[0]).items():
                totals[key] = totals.get(key, 0) + value
        else:
            totals["matched"] += _run_chunk_portable(
                chunk.queryset, specs, selects, update=not delete
            )
            if delete:
                chunk.queryset.delete()
        if progress:
            progress(done, len(chunks))
    if not fast:
        # Rows of this request by action (statuschange_once_per_request index).
        rows = (
            StatusChange.objects.filter(request_id=request_id)
            .values("action")
            .annotate(n=Count("id"))
        )
        totals.update({row["action"]: row["n"] for row in rows})
    return totals


# --- public API ----------------------------------------------------------------


def contacts_set_marketing(
    *,
    contacts: Target,
    source: StatusSource,
    actor=None,
    idempotency_key: str | None = None,
    at: dt.datetime | None = None,
    progress: Progress | None = None,
    guarded: bool = False,
) -> StatusChangeResult:
    """Make contacts marketing now; a pending downgrade is cancelled at no extra cost.

    `at` is for the demo seeder and tests: the change instant, clamped so it never
    precedes the last recorded change. `guarded=True` (bulk actions, the API,
    imports, workflows) lets the registered guards — billing's guardrails — hold
    the change for approval first: `ChangeHeld` is raised and nothing is written.
    """
    return _change_status(
        SET_MARKETING,
        contacts=contacts,
        source=source,
        actor=actor,
        idempotency_key=idempotency_key,
        at=at,
        progress=progress,
        guarded=guarded,
    )


def contacts_set_non_marketing(
    *,
    contacts: Target,
    source: StatusSource,
    actor=None,
    idempotency_key: str | None = None,
    at: dt.datetime | None = None,
    progress: Progress | None = None,
) -> StatusChangeResult:
    """Schedule contacts non-marketing from the next update date; they stay billable until then."""
    return _change_status(
        SET_NON_MARKETING,
        contacts=contacts,
        source=source,
        actor=actor,
        idempotency_key=idempotency_key,
        at=at,
        progress=progress,
    )


def contacts_delete(
    *,
    contacts: Target,
    actor=None,
    source: StatusSource | None = None,
    idempotency_key: str | None = None,
    at: dt.datetime | None = None,
    progress: Progress | None = None,
) -> StatusChangeResult:
    """Delete contacts; billable ones lower the live count at once (the peak stays)."""
    return _change_status(
        DELETE,
        contacts=contacts,
        source=source or StatusSource(StatusSourceType.DELETION),
        actor=actor,
        idempotency_key=idempotency_key,
        at=at,
        progress=progress,
    )


def contacts_rollover(
    *,
    as_of: dt.datetime | None = None,
    at: dt.datetime | None = None,
    progress: Progress | None = None,
) -> StatusChangeResult:
    """Apply every pending downgrade due at or before `as_of` (default: now).

    Billable counts do not move (the ledger counted each downgrade at its date
    when it was scheduled); the stored status catches up and each contact gets a
    "rollover" ledger row. Also opens the counter rows of every period up to `as_of`.
    Idempotent: a second run finds nothing due. `as_of` is capped at the
    present (`at`, for tests, or the clock): nothing is applied early.
    """
    source = StatusSource(StatusSourceType.ROLLOVER, name="Period rollover")
    calendar = BillingCalendar.for_account()
    with transaction.atomic():
        state, now = _lock_usage(at, calendar)
        as_of = min(as_of or now, now)
        due = Contact.objects.filter(
            marketing_status=MarketingStatus.MARKETING, marketing_until__lte=as_of
        )
        if state.rolled_over_through is not None:
            # Downgrades are always scheduled after the instant they are asked for, and
            # instants only grow, so none falls at or before the last rollover's as_of.
            due = due.filter(marketing_until__gt=state.rolled_over_through)
        request, _ = _begin(
            operation=ROLLOVER,
            source=source,
            actor=None,
            idempotency_key=None,
            fingerprint=_fingerprint(ROLLOVER, source, [], extra=as_of.isoformat()),
            now=now,
        )
        usage = period_usage_at(now, calendar)
        spec = _operation(ROLLOVER, now=as_of, until=None, source=source)
        totals = _apply(
            due,
            lambda: [spec],
            now=now,
            source=source,
            request_id=request.pk,
            actor_id=None,
            delete=False,
            progress=progress,
        )
        _leave_ad_audiences(since=state.rolled_over_through, through=as_of)
        if state.rolled_over_through is None or as_of > state.rolled_over_through:
            state.rolled_over_through = as_of
            state.save(update_fields=["rolled_over_through"])
        result = StatusChangeResult(
            operation=ROLLOVER,
            idempotency_key=request.idempotency_key,
            requested_at=now,
            matched=totals.get("matched", 0),
            applied=totals.get(LedgerAction.ROLLOVER, 0),
            effective_from=as_of,
        )
        return _finish(
            request=request,
            state=state,
            usage=usage,
            result=result,
            live_delta=0,
            scheduled_delta=0,
        )


def _leave_ad_audiences(*, since: dt.datetime | None, through: dt.datetime) -> int:
    """Ad audiences hold marketing contacts only (DESIGN §1.1): the contacts whose downgrade
    the rollover just applied leave every audience, in one DELETE (contact_pending_idx
    finds them; adaudience memberships have nothing depending on them, so Django deletes
    without reading the rows first)."""
    from contacts.models import AdAudienceMembership

    rolled = Contact.objects.filter(
        marketing_status=MarketingStatus.NON_MARKETING, marketing_until__lte=through
    )
    if since is not None:
        rolled = rolled.filter(marketing_until__gt=since)
    removed, _ = AdAudienceMembership.objects.filter(contact__in=rolled.values("pk")).delete()
    if removed:
        logger.info(
            "rollover: %s ad audience memberships of non-marketing contacts removed", removed
        )
    return removed


def contacts_status_preview(
    *, contacts: Target, operation: str, at: dt.datetime | None = None, additional: int = 0
) -> StatusPreview:
    """Counts of what a set-marketing or set-non-marketing would do; nothing is written.

    `additional` (set-marketing only) counts contacts that do not exist yet but would be
    created and made marketing by the same operation — an import's new rows: they are
    matched and would change, so the preview's extensions (billing's cost) price them too.
    """
    if operation not in (SET_MARKETING, SET_NON_MARKETING):
        raise StatusError(
            f"Unknown operation {operation!r}; use set_marketing or set_non_marketing."
        )
    if additional and operation != SET_MARKETING:
        raise StatusError("Only a set-marketing preview can count contacts not created yet.")
    from contacts.selectors import usage_current

    target = _as_queryset_or_ids(contacts)
    now = at or timezone.now()
    usage = usage_current(at=now)
    preview = StatusPreview(
        operation=operation,
        at=now,
        live_count=usage.live_count,
        peak_count=usage.peak_count,
        period_start=usage.period_start,
        period_end=usage.period_end,
    )
    pending = Q(marketing_status=_M, marketing_until__gt=now)
    billable_settled = Q(marketing_status=_M, marketing_until__isnull=True)
    chunks = _chunks(target)
    for chunk in chunks:
        counts = chunk.queryset.order_by().aggregate(
            matched=Count("pk"),
            pending=Count("pk", filter=pending),
            settled=Count("pk", filter=billable_settled),
        )
        preview.matched += counts["matched"]
        if operation == SET_MARKETING:
            preview.would_cancel += counts["pending"]
            preview.already += counts["settled"]
            preview.would_change += counts["matched"] - counts["pending"] - counts["settled"]
        else:
            preview.would_schedule += counts["settled"]
            preview.already += counts["matched"] - counts["settled"]
    preview.matched += additional
    preview.would_change += additional
    if operation == SET_NON_MARKETING and preview.would_schedule:
        preview.effective_from = usage.period_end
    preview.live_after = preview.live_count + preview.would_change
    preview.peak_after = max(preview.peak_count, preview.live_after)
    preview.extra = preview_extras(preview)
    return preview


# --- contacts ------------------------------------------------------------------


@dataclass(frozen=True)
class CreationDecision:
    """The status a new contact gets, what the ledger names as its reason, and why (for people)."""

    marketing: bool
    status_source: StatusSource
    reason: str


def contacts_creation_policy(
    *,
    source: Source,
    requested_marketing: bool | None = None,
    channel_marketing: bool | None = None,
    channel: StatusSource | None = None,
    requester: StatusSource | None = None,
) -> CreationDecision:
    """The status of a new contact (DESIGN §1.3): the one rule every entry path applies.

    Admin and API create, forms (ours and external), chatflows, connected apps, ads
    leads and imports all ask here. In order:

    1. A locked kind (mobile app, email logging, team inbox, documents, meetings, email
       extension) always creates non-marketing; asking for marketing raises
       `LockedSourceError`.
    2. `requested_marketing` — a permitted person's choice in the admin or API, an
       import's "set all as marketing" — wins; the ledger names `requester`.
    3. `channel_marketing` — the form's, chatflow's, app's or ad account's own setting
       (already resolved, e.g. a form's account-wide fallback); the ledger names `channel`.
    4. The source's `default_marketing`; the ledger names the source (CREATION).

    Pure: it reads only its arguments (whether the caller may ask for marketing is the
    interface's check).
    """
    label = f"“{source.name}” ({source.get_kind_display()})"
    creation = StatusSource(StatusSourceType.CREATION, id=str(source.pk or ""), name=source.name)
    if source.locked:
        if requested_marketing:
            raise LockedSourceError(
                f"Contacts from {label} are always non-marketing: that kind of source is locked."
            )
        return CreationDecision(
            marketing=False,
            status_source=channel or creation,
            reason=f"{label} is a locked source: its contacts are always non-marketing.",
        )
    if requested_marketing is not None:
        return CreationDecision(
            marketing=requested_marketing,
            status_source=requester or channel or creation,
            reason=f"Chosen as {'marketing' if requested_marketing else 'non-marketing'} "
            "when it was created.",
        )
    if channel_marketing is not None:
        named = f"“{channel.name}”" if channel and channel.name else label
        return CreationDecision(
            marketing=channel_marketing,
            status_source=channel or creation,
            reason=f"{named} creates {'marketing' if channel_marketing else 'non-marketing'} "
            "contacts.",
        )
    return CreationDecision(
        marketing=source.default_marketing,
        status_source=creation,
        reason=f"The default of the source {label}: "
        f"{'marketing' if source.default_marketing else 'non-marketing'}.",
    )


def _contact_insert(
    contact: Contact, decision: CreationDecision, *, actor, idempotency_key: str | None = None
) -> None:
    """Save a new contact with its decided status: marketing goes through the status service
    (one ledger row naming the reason); non-marketing records the reason on the contact only."""
    if not decision.marketing:
        contact.marketing_reason_type = decision.status_source.type
        contact.marketing_reason_id = decision.status_source.id
        contact.marketing_reason_name = decision.status_source.name[:200]
    _save_unique_email(contact)
    if decision.marketing:
        contacts_set_marketing(
            contacts=contact,
            source=decision.status_source,
            actor=actor,
            idempotency_key=idempotency_key,
        )
        contact.refresh_from_db()


def contact_create(
    *,
    email: str,
    source: Source,
    actor=None,
    marketing: bool | None = None,
    status_source: StatusSource | None = None,
    idempotency_key: str | None = None,
    **fields,
) -> Contact:
    """Create a contact; its status is decided by `contacts_creation_policy`.

    `marketing` is the creator's explicit choice (None: the source's default), and
    `status_source` who made it. A locked source can never create a marketing
    contact. Whether the caller may choose `marketing` (the permission) is checked by
    the interface. A duplicate email is a ValidationError (see `contact_intake` to
    create or update by email).
    """
    decision = contacts_creation_policy(
        source=source, requested_marketing=marketing, requester=status_source
    )
    with transaction.atomic():
        contact = Contact(email=normalise_email(email), source=source, **fields)
        contact.full_clean(exclude=["source"])
        _contact_insert(contact, decision, actor=actor, idempotency_key=idempotency_key)
        contacts_changed([contact.pk])  # event-triggered workflows, after commit
    return contact


CONTACT_EDITABLE_FIELDS = frozenset(
    {
        "email",
        "first_name",
        "last_name",
        "company",
        "phone",
        "lifecycle_stage",
        "lead_status",
        "contact_type",
        "unsubscribed",
        "hard_bounced",
        "lead_score",
        "last_engaged_at",
    }
)


def contact_update(*, contact: Contact, **fields) -> Contact:
    """Update a contact's ordinary fields. The status is not one of them."""
    unknown = set(fields) - CONTACT_EDITABLE_FIELDS
    if unknown:
        raise StatusError(f"These fields cannot be updated here: {', '.join(sorted(unknown))}.")
    for name, value in fields.items():
        setattr(contact, name, value)
    contact.full_clean(exclude=["source"])
    _save_unique_email(contact, update_fields=[*fields, "updated_at"])
    contacts_changed([contact.pk])  # event-triggered workflows, after commit
    return contact


def _save_unique_email(contact: Contact, **kwargs) -> None:
    """Save; a concurrent writer of the same email is reported like the form's own check."""
    from django.core.exceptions import ValidationError
    from django.db import IntegrityError

    try:
        with transaction.atomic():
            contact.save(**kwargs)
    except IntegrityError as error:
        if Contact.objects.filter(email=contact.email).exclude(pk=contact.pk).exists():
            raise ValidationError({"email": "A contact with this email already exists."}) from error
        raise


# --- sources -------------------------------------------------------------------


def _check_source_default(*, kind: str, default_marketing: bool) -> None:
    from django.core.exceptions import ValidationError

    if default_marketing and Source(kind=kind).locked:
        raise ValidationError(
            {
                "default_marketing": (
                    f"Sources of kind {kind!r} are locked: their contacts are always "
                    "non-marketing, so default_marketing must be false."
                )
            }
        )


def source_create(*, name: str, kind: str, default_marketing: bool | None = None) -> Source:
    """A source; its default is the kind's (DESIGN §1.3) unless given. Locked kinds refuse marketing."""
    default = Source.kind_default(kind) if default_marketing is None else default_marketing
    _check_source_default(kind=kind, default_marketing=default)
    source = Source(name=name, kind=kind, default_marketing=default)
    source.full_clean()
    source.save()
    return source


def source_update(*, source: Source, **fields) -> Source:
    unknown = set(fields) - {"name", "kind", "default_marketing"}
    if unknown:
        raise StatusError(f"These source fields cannot be updated: {', '.join(sorted(unknown))}.")
    for name, value in fields.items():
        setattr(source, name, value)
    _check_source_default(kind=source.kind, default_marketing=source.default_marketing)
    source.full_clean()
    source.save()
    return source


def source_delete(*, source: Source) -> None:
    if Contact.objects.filter(source=source).exists():
        raise SourceInUse(f"The source {source.name!r} still has contacts; it cannot be deleted.")
    source.delete()


# --- intake ---
#
# Every way a contact arrives from outside — our forms, external forms, chatflows,
# connected apps, ads leads — creates or updates it by normalised email through
# `contact_intake` (one contact) or `connected_app_contacts_upsert` (a batch, set-based),
# and both decide a new contact's status with `contacts_creation_policy`. An existing
# contact is never downgraded; only a form set to upgrade (DESIGN §1.3) makes an
# existing non-marketing contact marketing, with the form named in the ledger.

# A connected app's batch: at most this many contacts a request.
INTAKE_BATCH_MAX = 10_000
# Emails per `email IN (…)` lookup: well under SQLite's variable limit, ~100 KB of text.
INTAKE_LOOKUP_CHUNK = 2_000
# Rows per INSERT / UPDATE statement of a batch upsert.
INTAKE_WRITE_BATCH = 1_000
# An ad account's webhook: at most this many leads a request (each is its own transaction).
ADS_BATCH_MAX = 500
# The contact fields a connected app or an ads lead may set (besides email).
INTAKE_FIELDS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "company",
    "phone",
    "lifecycle_stage",
    "lead_status",
    "contact_type",
)
EXTERNAL_FORMS_SOURCE_NAME = "External forms"


class IntakeError(StatusError):
    """An intake request that cannot be taken as a whole (the message is for the caller)."""


@dataclass
class IntakeResult:
    contact: Contact
    created: bool
    upgraded: bool
    updated_fields: list[str]
    decision: CreationDecision
    replayed: bool = False


def _settled_marketing(contact: Contact) -> bool:
    return contact.marketing_status == MarketingStatus.MARKETING and contact.marketing_until is None


def _changed_values(contact: Contact, fields: dict) -> dict:
    """The given fields whose value differs; an empty value never overwrites a stored one."""
    return {
        name: value
        for name, value in fields.items()
        if value not in ("", None) and getattr(contact, name) != value
    }


def contact_intake(
    *,
    email: str,
    source: Source,
    channel: StatusSource,
    channel_marketing: bool | None,
    upgrade_existing: bool = False,
    actor=None,
    fields: dict | None = None,
) -> IntakeResult:
    """Create or update one contact by normalised email, from an intake channel.

    A new contact records `source` and gets the status `contacts_creation_policy`
    decides (the ledger names `channel`). An existing contact keeps its source; its
    non-empty `fields` are updated; its status is never lowered, and is raised only
    when `upgrade_existing` and the channel creates marketing contacts (the ledger row
    names the channel). Two concurrent intakes of a new email: one creates, the other
    updates.
    """
    fields = dict(fields or {})
    decision = contacts_creation_policy(
        source=source, channel_marketing=channel_marketing, channel=channel
    )
    email = normalise_email(email)
    with transaction.atomic():
        contact = Contact.objects.select_for_update().filter(email=email).first()
        if contact is None:
            contact = Contact(email=email, source=source, **fields)
            # Uniqueness is the index's job here: a concurrent intake may win the insert.
            contact.full_clean(exclude=["source"], validate_unique=False)
            try:
                with transaction.atomic():
                    _contact_insert(contact, decision, actor=actor)
            except ValidationError:
                # Created meanwhile by a concurrent intake: update it instead.
                contact = Contact.objects.select_for_update().get(email=email)
            else:
                contacts_changed([contact.pk])  # event-triggered workflows, after commit
                return IntakeResult(
                    contact=contact,
                    created=True,
                    upgraded=False,
                    updated_fields=[],
                    decision=decision,
                )
        changed = _changed_values(contact, fields)
        if changed:
            contact_update(contact=contact, **changed)
        upgraded = False
        if upgrade_existing and decision.marketing and not _settled_marketing(contact):
            result = contacts_set_marketing(
                contacts=contact, source=decision.status_source, actor=actor
            )
            upgraded = bool(result.changed or result.cancelled)
            contact.refresh_from_db()
    return IntakeResult(
        contact=contact,
        created=False,
        upgraded=upgraded,
        updated_fields=sorted(changed),
        decision=decision,
    )


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


# --- intake: sources owned by channels ----------------------------------------------


def _owned_source(*, kind: str, name: str, default_marketing: bool) -> Source:
    """A new Source for a form, chatflow, app or ad account (a free name is found)."""
    base = name[:190]
    candidate, n = base, 1
    while Source.objects.filter(name=candidate).exists():
        n += 1
        candidate = f"{base} ({n})"
    return source_create(name=candidate, kind=kind, default_marketing=default_marketing)


def _sync_source_default(source: Source, marketing: bool) -> None:
    # The Source shows the channel's own setting; the channel's value is what the policy reads.
    if source.default_marketing != marketing:
        Source.objects.filter(pk=source.pk).update(default_marketing=marketing)
        source.default_marketing = marketing


# --- intake: forms -------------------------------------------------------------------


@dataclass
class SubmissionResult:
    submission: FormSubmission | None
    intake: IntakeResult | None
    replayed: bool = False
    discarded: bool = False  # the honeypot was filled: nothing stored


def form_field_specs(form: Form) -> list[dict]:
    """The form's asked fields as [{"name", "required", "label"}], in order."""
    specs = []
    for item in form.fields or []:
        item = {"name": item} if isinstance(item, str) else item
        specs.append(
            {
                "name": item["name"],
                "required": bool(item.get("required", False)),
                "label": item.get("label") or "",
            }
        )
    return specs


def form_creates_marketing(form: Form) -> bool:
    """The form's own setting, or the account's default for forms."""
    if form.create_as_marketing is not None:
        return form.create_as_marketing
    return Account.load().forms_create_marketing


def form_status_source(form: Form) -> StatusSource:
    return StatusSource(StatusSourceType.FORM, id=str(form.pk), name=form.name)


def form_save(*, form: Form) -> Form:
    """Create or change a form; a new one gets its Source (kind form)."""
    form.full_clean(exclude=["source"])
    form.fields = form_field_specs(form)
    with transaction.atomic():
        if form.source_id is None:
            form.source = _owned_source(
                kind=SourceKind.FORM, name=f"Form: {form.name}", default_marketing=True
            )
        form.save()
        _sync_source_default(form.source, form_creates_marketing(form))
    return form


def _submit(
    *,
    form: Form | None,
    source: Source,
    channel: StatusSource,
    marketing: bool,
    upgrade: bool,
    data: dict,
    consent: bool | None,
    submission_key: str | None,
    external_form: str = "",
    page_url: str = "",
    at: dt.datetime | None = None,
) -> SubmissionResult:
    """One form submission: the contact, its FormSubmission and a FORM_SUBMISSION event,
    all or nothing; a retried key returns the first submission and changes nothing."""
    if submission_key:
        existing = FormSubmission.objects.filter(submission_key=submission_key).first()
        if existing is not None:
            return SubmissionResult(submission=existing, intake=None, replayed=True)
    now = at or timezone.now()
    fields = {name: value for name, value in data.items() if name != "email"}
    try:
        with transaction.atomic():
            intake = contact_intake(
                email=data["email"],
                source=source,
                channel=channel,
                channel_marketing=marketing,
                upgrade_existing=upgrade,
                fields=fields,
            )
            submission = FormSubmission.objects.create(
                form=form,
                external_form=external_form[:200],
                page_url=page_url[:1000],
                contact=intake.contact,
                data={k: v for k, v in data.items() if v not in ("", None)},
                consent=consent,
                created_contact=intake.created,
                upgraded=intake.upgraded,
                submission_key=submission_key,
                submitted_at=now,
            )
            engagement_record(
                contact=intake.contact,
                type=EngagementType.FORM_SUBMISSION,
                at=now,
                external_id=f"form-submission:{submission.pk}",
                properties={
                    "form_id": form.pk if form else None,
                    "form_name": form.name if form else external_form,
                    "page_url": page_url,
                },
            )
    except IntegrityError:
        # The same key, submitted twice at once: the other one stored it.
        existing = (
            FormSubmission.objects.filter(submission_key=submission_key).first()
            if submission_key
            else None
        )
        if existing is None:
            raise
        return SubmissionResult(submission=existing, intake=None, replayed=True)
    return SubmissionResult(submission=submission, intake=intake)


def form_submit(
    *,
    form: Form,
    data: dict,
    consent: bool | None = None,
    submission_id: str | None = None,
    page_url: str = "",
    at: dt.datetime | None = None,
) -> SubmissionResult:
    """A visitor's submission of one of our forms (`data`: email and the asked fields, cleaned).

    New contacts get the form's setting (or the account's default). With `upgrade_existing`,
    an existing non-marketing contact becomes marketing, logged with the form as source.
    A form with an optional consent checkbox left unticked never makes anyone marketing.
    """
    marketing = form_creates_marketing(form)
    if form.consent_label and not consent:
        marketing = False
    return _submit(
        form=form,
        source=form.source,
        channel=form_status_source(form),
        marketing=marketing,
        upgrade=marketing and form.upgrade_existing,
        data=data,
        consent=consent if form.consent_label else None,
        submission_key=f"form:{form.pk}:{submission_id}" if submission_id else None,
        page_url=page_url,
        at=at,
    )


def external_forms_source() -> Source:
    source = Source.objects.filter(name=EXTERNAL_FORMS_SOURCE_NAME).first()
    if source is None:
        source = _owned_source(
            kind=SourceKind.EXTERNAL_FORM, name=EXTERNAL_FORMS_SOURCE_NAME, default_marketing=True
        )
    return source


def external_form_submit(
    *,
    form_identifier: str,
    data: dict,
    page_url: str = "",
    submission_id: str | None = None,
    at: dt.datetime | None = None,
) -> SubmissionResult:
    """A submission of an external (non-native) form: one account setting decides, and the
    same upgrade rule as our forms applies."""
    marketing = Account.load().external_forms_marketing
    source = external_forms_source()
    _sync_source_default(source, marketing)
    return _submit(
        form=None,
        source=source,
        channel=StatusSource(
            StatusSourceType.FORM,
            id=f"external:{form_identifier}"[:64],
            name=f"External form “{form_identifier}”"[:200],
        ),
        marketing=marketing,
        upgrade=marketing,
        data=data,
        consent=None,
        submission_key=f"external:{submission_id}"[:250] if submission_id else None,
        external_form=form_identifier,
        page_url=page_url,
        at=at,
    )


# --- intake: chatflows ---------------------------------------------------------------


def chatflow_save(*, chatflow: Chatflow) -> Chatflow:
    chatflow.full_clean(exclude=["source"])
    with transaction.atomic():
        if chatflow.source_id is None:
            chatflow.source = _owned_source(
                kind=SourceKind.CHATFLOW, name=f"Chatflow: {chatflow.name}", default_marketing=False
            )
        chatflow.save()
        _sync_source_default(chatflow.source, chatflow.marketing)
    return chatflow


def chatflow_intake(
    *,
    chatflow: Chatflow,
    data: dict,
    conversation_id: str | None = None,
    at: dt.datetime | None = None,
) -> IntakeResult | None:
    """A chat visitor who left an email: the contact (the chatflow's setting for a new one,
    never an upgrade) and a CHAT event. A known conversation id changes nothing (None)."""
    from contacts.models import EngagementEvent

    external_id = f"chat:{chatflow.pk}:{conversation_id}"[:200] if conversation_id else None
    if external_id and EngagementEvent.objects.filter(external_id=external_id).exists():
        return None
    now = at or timezone.now()
    with transaction.atomic():
        intake = contact_intake(
            email=data["email"],
            source=chatflow.source,
            channel=StatusSource(
                StatusSourceType.CHATFLOW, id=str(chatflow.pk), name=chatflow.name
            ),
            channel_marketing=chatflow.marketing,
            fields={name: value for name, value in data.items() if name != "email"},
        )
        recorded = engagement_record(
            contact=intake.contact,
            type=EngagementType.CHAT,
            at=now,
            external_id=external_id,
            properties={"chatflow_id": chatflow.pk, "chatflow_name": chatflow.name},
        )
        if not recorded:  # the same conversation, concurrently: undo this one
            transaction.set_rollback(True)
            return None
    return intake


# --- intake: tokens (connected apps, ad accounts) -------------------------------------


TOKEN_BYTES = 32


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def intake_token_issue(*, holder: ConnectedApp | AdAccount) -> str:
    """A new secret for the holder (the old one stops working). Returned once, stored hashed."""
    prefix = "mk_app_" if isinstance(holder, ConnectedApp) else "mk_ads_"
    token = prefix + secrets.token_urlsafe(TOKEN_BYTES)
    holder.token_hash = token_digest(token)
    holder.token_hint = token[:12]
    holder.token_created_at = timezone.now()
    if holder.pk:
        type(holder).objects.filter(pk=holder.pk).update(
            token_hash=holder.token_hash,
            token_hint=holder.token_hint,
            token_created_at=holder.token_created_at,
        )
    return token


def intake_token_holder(*, model: type[ConnectedApp] | type[AdAccount], token: str):
    """The active holder of this token, or None (token_hash unique index)."""
    if not token:
        return None
    return model.objects.filter(token_hash=token_digest(token), is_active=True).first()


# --- intake: connected apps ----------------------------------------------------------


def connected_app_create(
    *, name: str, marketing: bool = False, two_way_sync: bool = False
) -> tuple[ConnectedApp, str]:
    """A connected app and its token (shown once)."""
    with transaction.atomic():
        app = ConnectedApp(name=name, two_way_sync=two_way_sync)
        token = intake_token_issue(holder=app)
        app.source = _owned_source(
            kind=SourceKind.INTEGRATION, name=f"App: {name}", default_marketing=False
        )
        app.full_clean(exclude=["token_hash"])
        app.save()
        if marketing:
            connected_app_set_marketing(app=app, marketing=True)
    return app, token


def connected_app_set_marketing(*, app: ConnectedApp, marketing: bool) -> ConnectedApp:
    """Switch the app's marketing setting. On: contacts it creates from now on are marketing
    (the time is recorded; earlier contacts stay as they are). Off: the time is cleared."""
    now = timezone.now()
    with transaction.atomic():
        locked = ConnectedApp.objects.select_for_update().get(pk=app.pk)
        if locked.marketing != marketing:
            locked.marketing = marketing
            locked.marketing_enabled_at = now if marketing else None
            locked.save(update_fields=["marketing", "marketing_enabled_at", "updated_at"])
            _sync_source_default(locked.source, marketing)
    app.marketing, app.marketing_enabled_at = locked.marketing, locked.marketing_enabled_at
    return app


@dataclass
class BatchItemResult:
    index: int
    email: str
    status: str  # created | updated | unchanged | error
    id: int | None = None
    marketing_status: str | None = None
    changed_fields: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


@dataclass
class BatchResult:
    items: list[BatchItemResult]
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: int = 0
    marketing: int = 0  # new contacts made marketing
    marketing_held: str = ""  # the guardrails held making them marketing
    reason: str = ""


def _intake_field_errors(item) -> tuple[dict, list[str]]:
    """Check one incoming contact against the model's own field rules (no query)."""
    from django.core.exceptions import ValidationError as DjangoValidationError

    if not isinstance(item, dict):
        return {}, ["Each contact must be an object with at least an email."]
    messages: list[str] = []
    unknown = sorted(set(item) - {"email", *INTAKE_FIELDS})
    if unknown:
        messages.append(
            f"Unknown fields: {', '.join(map(str, unknown))} "
            f"(allowed: email, {', '.join(INTAKE_FIELDS)})."
        )
    cleaned: dict = {}
    raw_email = item.get("email")
    if not isinstance(raw_email, str) or not raw_email.strip():
        messages.append("email: this field is required.")
    else:
        try:
            cleaned["email"] = Contact._meta.get_field("email").clean(
                normalise_email(raw_email), None
            )
        except DjangoValidationError as error:
            messages.extend(f"email: {m}" for m in error.messages)
    for name in INTAKE_FIELDS:
        if name not in item or item[name] in (None, ""):
            continue
        value = item[name]
        if not isinstance(value, str):
            messages.append(f"{name}: must be text.")
            continue
        try:
            cleaned[name] = Contact._meta.get_field(name).clean(value.strip(), None)
        except DjangoValidationError as error:
            messages.extend(f"{name}: {m}" for m in error.messages)
    return cleaned, messages


def connected_app_contacts_upsert(
    *, app: ConnectedApp, items: list, at: dt.datetime | None = None
) -> BatchResult:
    """Create or update up to INTAKE_BATCH_MAX contacts by normalised email, set-based.

    One lookup query a chunk of emails, `bulk_create` for the new contacts, `bulk_update`
    for the changed ones, and one guarded `contacts_set_marketing` for every new contact
    the app's setting makes marketing (existing contacts are never downgraded, nor
    upgraded). Retrying the same batch finds every contact unchanged and writes nothing.
    """
    if len(items) > INTAKE_BATCH_MAX:
        raise IntakeError(f"At most {INTAKE_BATCH_MAX:,} contacts a request; got {len(items):,}.")
    app = ConnectedApp.objects.select_related("source").get(pk=app.pk)  # the setting now
    channel = StatusSource(StatusSourceType.INTEGRATION, id=str(app.pk), name=app.name)
    decision = contacts_creation_policy(
        source=app.source, channel_marketing=app.marketing, channel=channel
    )
    results: list[BatchItemResult] = []
    wanted: dict[str, tuple[int, dict]] = {}
    for index, item in enumerate(items):
        cleaned, messages = _intake_field_errors(item)
        email = cleaned.get("email", "")
        if not messages and email in wanted:
            messages.append(f"The same email as item {wanted[email][0]} of this batch.")
        if messages:
            raw = item.get("email") if isinstance(item, dict) else None
            results.append(
                BatchItemResult(
                    index=index,
                    email=raw if isinstance(raw, str) else "",
                    status="error",
                    messages=messages,
                )
            )
            continue
        wanted[email] = (index, {k: v for k, v in cleaned.items() if k != "email"})
        results.append(BatchItemResult(index=index, email=email, status="unchanged"))
    batch = BatchResult(items=results, reason=decision.reason)
    # A concurrent writer may create one of our new emails between lookup and insert: the
    # unique index refuses the insert, and the retry finds it as existing.
    for attempt in range(3):
        try:
            with transaction.atomic():
                _upsert(app, wanted, results, batch, decision, at=at)
            break
        except IntegrityError:
            if attempt == 2:
                raise
            for result in results:
                if result.status != "error":
                    result.status, result.changed_fields = "unchanged", []
                    result.id = result.marketing_status = None
            batch.marketing, batch.marketing_held = 0, ""
    for result in results:
        counter = "errors" if result.status == "error" else result.status
        setattr(batch, counter, getattr(batch, counter) + 1)
    contacts_changed(r.id for r in results if r.status in ("created", "updated") and r.id)
    return batch


def _upsert(app, wanted: dict, results: list, batch: BatchResult, decision, *, at) -> None:
    now = at or timezone.now()
    emails = list(wanted)
    existing: dict[str, Contact] = {}
    for start in range(0, len(emails), INTAKE_LOOKUP_CHUNK):
        chunk = emails[start : start + INTAKE_LOOKUP_CHUNK]
        # contacts_contact email unique index
        for contact in Contact.objects.filter(email__in=chunk).only(
            "id", "email", "marketing_status", "marketing_until", *INTAKE_FIELDS
        ):
            existing[contact.email] = contact
    new: list[Contact] = []
    changed: list[Contact] = []
    changed_names: set[str] = set()
    reason = decision.status_source
    for email, (index, fields) in wanted.items():
        result = results[index]
        contact = existing.get(email)
        if contact is None:
            contact = Contact(
                email=email,
                source_id=app.source_id,
                marketing_reason_type="" if decision.marketing else reason.type,
                marketing_reason_id="" if decision.marketing else reason.id,
                marketing_reason_name="" if decision.marketing else reason.name[:200],
                **fields,
            )
            new.append(contact)
            result.status = "created"
            continue
        values = _changed_values(contact, fields)
        result.id = contact.pk
        result.marketing_status = contact.effective_status(now)
        if values:
            for name, value in values.items():
                setattr(contact, name, value)
            contact.updated_at = now
            changed.append(contact)
            changed_names.update(values)
            result.status, result.changed_fields = "updated", sorted(values)
    # Ids come back from INSERT … RETURNING (PostgreSQL, SQLite ≥ 3.35).
    Contact.objects.bulk_create(new, batch_size=INTAKE_WRITE_BATCH)
    if changed:
        Contact.objects.bulk_update(
            changed, [*sorted(changed_names), "updated_at"], batch_size=INTAKE_WRITE_BATCH
        )
    new_status = MarketingStatus.NON_MARKETING
    if decision.marketing and new:
        try:
            contacts_set_marketing(
                contacts=[contact.pk for contact in new],
                source=decision.status_source,
                guarded=True,  # billing's hard cap and per-operation limit
            )
        except ChangeHeld as held:
            batch.marketing_held = str(held)
        else:
            batch.marketing = len(new)
            new_status = MarketingStatus.MARKETING
    for contact in new:
        result = results[wanted[contact.email][0]]
        result.id, result.marketing_status = contact.pk, new_status


# --- intake: ad accounts ---------------------------------------------------------------


def ad_account_create(*, name: str, platform: str, marketing: bool = True) -> tuple[AdAccount, str]:
    """An ad account and its webhook token (shown once)."""
    with transaction.atomic():
        account = AdAccount(name=name, platform=platform, marketing=marketing)
        token = intake_token_issue(holder=account)
        account.source = _owned_source(
            kind=SourceKind.ADS, name=f"Ads: {name}", default_marketing=marketing
        )
        account.full_clean(exclude=["token_hash"])
        account.save()
    return account, token


def ad_account_save(*, ad_account: AdAccount) -> AdAccount:
    with transaction.atomic():
        ad_account.full_clean(exclude=["token_hash"])
        ad_account.save()
        _sync_source_default(ad_account.source, ad_account.marketing)
    return ad_account


def ad_lead_receive(
    *,
    ad_account: AdAccount,
    lead_id: str,
    data: dict,
    properties: dict | None = None,
    at: dt.datetime | None = None,
) -> tuple[AdLead, IntakeResult | None]:
    """One lead, once per (ad account, platform lead id): the contact (the account's setting
    for a new one, never an upgrade), an AdLead row and an AD_CLICK event. A lead id already
    received returns its row and None, changing nothing."""
    existing = AdLead.objects.filter(ad_account=ad_account, lead_id=lead_id).first()
    if existing is not None:
        return existing, None
    now = at or timezone.now()
    fields = {name: value for name, value in data.items() if name != "email"}
    try:
        with transaction.atomic():
            intake = contact_intake(
                email=data["email"],
                source=ad_account.source,
                channel=StatusSource(
                    StatusSourceType.ADS, id=str(ad_account.pk), name=ad_account.name
                ),
                channel_marketing=ad_account.marketing,
                fields=fields,
            )
            lead = AdLead.objects.create(
                ad_account=ad_account,
                lead_id=lead_id,
                contact=intake.contact,
                created_contact=intake.created,
                data={**data, "properties": properties or {}},
                received_at=now,
            )
            engagement_record(
                contact=intake.contact,
                type=EngagementType.AD_CLICK,
                at=now,
                external_id=f"ad-lead:{ad_account.pk}:{lead_id}"[:200],
                properties={"ad_account_id": ad_account.pk, "lead_id": lead_id},
            )
    except IntegrityError:
        existing = AdLead.objects.filter(ad_account=ad_account, lead_id=lead_id).first()
        if existing is None:
            raise
        return existing, None
    return lead, intake


# --- imports -------------------------------------------------------------------
#
# A CSV import (DESIGN §1.3 "import", issue 4 item 7) goes: upload
# (`contact_import_create`: size limit, hash, header, columns mapped by their
# aliases) → mapping (`contact_import_configure`) → preview (`contact_import_preview`:
# counts and the billing impact, nothing written to contacts) → commit
# (`contact_import_commit`: queues the background job) → run (`contact_import_run`).
#
# Every pass streams the file: one cheap Python pass normalises and validates each row
# (the same rules on every database) and writes the good rows to a temporary staging
# table — COPY on PostgreSQL, executemany elsewhere — and the bad ones to
# `ImportRowError`. Duplicates are resolved in SQL (the last row of an email wins), so
# memory stays flat whatever the file's size. Then contacts are upserted by email:
# on PostgreSQL one INSERT … ON CONFLICT (email) DO UPDATE … WHERE changed statement
# per IMPORT_UPSERT_BATCH staged rows; elsewhere chunks of bulk_create/bulk_update.
# Existing contacts get the row's non-empty values only; status columns are never
# touched by the upsert: a marketing import makes its contacts marketing afterwards
# with one guarded `contacts_set_marketing` call (ledger source "import", id = the
# import's id, name = the file's name), so nothing is ever downgraded.

IMPORT_STAGE_BATCH = 50_000  # rows parsed between two staging writes and progress updates
IMPORT_UPSERT_BATCH = 100_000  # staged rows per upsert statement on PostgreSQL (~1-2 s each)
IMPORT_PORTABLE_BATCH = 2_000  # rows per bulk_create/bulk_update chunk elsewhere (~0.5 MB)
IMPORT_ERROR_BATCH = 5_000  # ImportRowError rows per bulk_create
IMPORT_HEAD_BYTES = 64 * 1024  # read to find the header and the delimiter
IMPORT_DEFAULT_SOURCE = "CSV import"
IMPORT_SORT_MEMORY = "256MB"  # PostgreSQL work_mem for the dedupe sort of a large file

_STAGE = "import_stage"
_IMPORT_FORCE_PORTABLE = False  # tests flip it to run the portable path on PostgreSQL


class ImportFileError(StatusError):
    """The file or the mapping cannot be imported; the message says why, for the user."""


class ImportNotAllowed(StatusError):
    """The user lacks a permission the import needs (a marketing import)."""


class ImportStateError(StatusError):
    """The import is not in a state that allows this step."""


def _key(value: str) -> str:
    """A header or value reduced to its letters and digits, lower-cased ("E-mail" → "email")."""
    return re.sub(r"[^a-z0-9]", "", value.lower())


def _choice_table(choices: type, *synonyms: tuple[str, str]) -> dict[str, str]:
    table = {}
    for value, label in choices.choices:
        table[_key(value)] = value
        table[_key(label)] = value
    table.update({_key(alias): value for alias, value in synonyms})
    return table


@dataclass(frozen=True)
class ImportField:
    name: str
    label: str
    kind: str  # "email", "text", "choice" or "flag"
    aliases: tuple[str, ...] = ()
    max_length: int = 0
    choices: dict[str, str] = field(default_factory=dict)


# The contact fields a column can fill, and the header names (HubSpot's export's among
# them) that map to each without asking. Headers are compared by `_key`.
IMPORT_FIELDS: dict[str, ImportField] = {
    f.name: f
    for f in (
        ImportField(
            "email",
            "Email",
            "email",
            ("email", "e-mail", "email address", "e-mail address", "mail", "work email"),
            max_length=254,
        ),
        ImportField(
            "first_name", "First name", "text", ("first name", "firstname", "given name"), 100
        ),
        ImportField(
            "last_name",
            "Last name",
            "text",
            ("last name", "lastname", "surname", "family name"),
            100,
        ),
        ImportField(
            "company",
            "Company",
            "text",
            ("company", "company name", "organization", "organisation", "associated company"),
            200,
        ),
        ImportField(
            "phone",
            "Phone",
            "text",
            ("phone", "phone number", "telephone", "mobile phone number", "mobile"),
            40,
        ),
        ImportField(
            "lifecycle_stage",
            "Lifecycle stage",
            "choice",
            ("lifecycle stage", "lifecyclestage", "lifecycle"),
            choices=_choice_table(LifecycleStage),
        ),
        ImportField(
            "lead_status",
            "Lead status",
            "choice",
            ("lead status", "hs_lead_status"),
            choices=_choice_table(LeadStatus),
        ),
        ImportField(
            "contact_type",
            "Contact type",
            "choice",
            ("contact type", "type"),
            choices=_choice_table(ContactType),
        ),
        ImportField(
            "unsubscribed",
            "Unsubscribed (yes only)",
            "flag",
            ("unsubscribed", "unsubscribed from all email", "opted out of all email"),
        ),
        ImportField("hard_bounced", "Hard bounced (yes only)", "flag", ("hard bounced", "bounced")),
    )
}
IMPORT_STAGED_FIELDS = list(IMPORT_FIELDS)  # email first, then the rest, in this order
_TEXT_FIELDS = [n for n, f in IMPORT_FIELDS.items() if f.kind in ("text", "choice")]
_FLAG_FIELDS = [n for n, f in IMPORT_FIELDS.items() if f.kind == "flag"]
_INSERT_DEFAULTS = {
    "lifecycle_stage": LifecycleStage.LEAD.value,
    "contact_type": ContactType.PROSPECT.value,
}
_HEADER_ALIASES = {
    _key(alias): name for name, f in IMPORT_FIELDS.items() for alias in (name, *f.aliases)
}
_TRUE = frozenset({"true", "yes", "y", "1", "t", "x"})
_FALSE = frozenset({"false", "no", "n", "0", "f", ""})
# Django's EmailValidator's own patterns for a plain dot-atom address: a row that passes
# needs no more work; anything else is asked of validate_email itself (IDN, literals).
_EMAIL_FAST = re.compile(
    r"[-!#$%&'*+/=?^_`{}|~0-9a-z]+(?:\.[-!#$%&'*+/=?^_`{}|~0-9a-z]+)*"
    r"@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}(?<!-)"
)


def import_max_bytes() -> int:
    return settings.IMPORT_MAX_BYTES


def _size_text(size: int) -> str:
    return f"{size / 1_000_000:,.1f} MB"


def import_check_size(size: int) -> None:
    limit = import_max_bytes()
    if size > limit:
        raise ImportFileError(
            f"The file is {_size_text(size)}; an import takes at most {_size_text(limit)} "
            "(setting IMPORT_MAX_BYTES). Split it into smaller files."
        )


@dataclass(frozen=True)
class CsvHead:
    delimiter: str
    columns: list[str]


def _read_head(head: bytes) -> CsvHead:
    """The delimiter and header of a file from its first bytes (UTF-8, BOM or not)."""
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=False)
    except UnicodeDecodeError as error:
        raise ImportFileError(
            "The file is not UTF-8 text: save it as “CSV UTF-8” (comma or semicolon "
            f"separated) and upload it again ({error.reason} at byte {error.start})."
        ) from error
    first_line = text.split("\n", 1)[0]
    if not first_line.strip():
        raise ImportFileError("The file is empty: its first line should name the columns.")
    if "\n" not in text and len(head) >= IMPORT_HEAD_BYTES:
        raise ImportFileError("The first line is too long to be a header of column names.")
    # Semicolons when the header has more of them than commas (Excel in many locales).
    delimiter = ";" if first_line.count(";") > first_line.count(",") else ","
    columns = next(csv.reader(io.StringIO(first_line), delimiter=delimiter), [])
    columns = [c.strip() for c in columns]
    seen: dict[str, int] = {}
    for number, name in enumerate(columns, start=1):
        if name and name in seen:
            raise ImportFileError(
                f"The header names the column “{name}” twice (columns {seen[name]} and "
                f"{number}); rename one and upload the file again."
            )
        seen[name] = number
    if not any(columns):
        raise ImportFileError("The first line should name the columns; it is empty.")
    return CsvHead(delimiter=delimiter, columns=columns)


def import_detect_mapping(columns: list[str]) -> dict[str, str]:
    """Each column's field by its header's alias ("E-mail" → email), or "" (ignored).
    A field goes to the first column that names it."""
    mapping, taken = {}, set()
    for column in columns:
        if not column:
            continue
        name = _HEADER_ALIASES.get(_key(column), "")
        if name in taken:
            name = ""
        taken.add(name)
        mapping[column] = name
    return mapping


def import_resolve_mapping(columns: list[str], given: dict | None) -> dict[str, str]:
    """The detected mapping with the caller's choices on top, checked.

    `given` maps column names to field names ("" or None: ignore the column). A field the
    caller maps is taken away from the column its alias had given it to.
    """
    mapping = import_detect_mapping(columns)
    given = given or {}
    if not isinstance(given, dict):
        raise ImportFileError('The mapping must be an object: {"column name": "field", …}.')
    problems = []
    for column, name in given.items():
        name = (name or "").strip() if isinstance(name, str) or name is None else name
        if column not in mapping:
            problems.append(
                f"There is no column “{column}” in the file (its columns: "
                + ", ".join(f"“{c}”" for c in columns if c)
                + ")."
            )
        elif not isinstance(name, str) or (name and name not in IMPORT_FIELDS):
            problems.append(
                f"“{name}” (for the column “{column}”) is not a field an import can fill; "
                "use one of " + ", ".join(IMPORT_FIELDS) + ", or an empty value to ignore it."
            )
    if problems:
        raise ImportFileError(" ".join(problems))
    chosen = {column: (name or "").strip() for column, name in given.items()}
    for column in mapping:
        if column in chosen:
            mapping[column] = chosen[column]
        elif mapping[column] and mapping[column] in chosen.values():
            mapping[column] = ""
    import_check_mapping(mapping)
    return mapping


def import_check_mapping(mapping: dict[str, str]) -> None:
    by_field: dict[str, list[str]] = {}
    for column, name in mapping.items():
        if name:
            by_field.setdefault(name, []).append(column)
    twice = {name: cols for name, cols in by_field.items() if len(cols) > 1}
    if twice:
        raise ImportFileError(
            " ".join(
                f"The field {name} is mapped from more than one column ("
                + ", ".join(f"“{c}”" for c in cols)
                + "); keep one."
                for name, cols in twice.items()
            )
        )
    if "email" not in by_field:
        raise ImportFileError(
            "No column is mapped to email: contacts are matched by email, so one column must "
            "hold it (map it, e.g. “Email”)."
        )


def _check_marketing_allowed(actor, marketing: bool) -> None:
    """A marketing import needs contacts.change_marketing_status. No actor: an operator's
    command, trusted like the other management commands."""
    if marketing and actor is not None and not actor.has_perm("contacts.change_marketing_status"):
        raise ImportNotAllowed(
            "Setting the contacts of an import as marketing needs the permission "
            "contacts.change_marketing_status; import without “marketing”, or ask someone "
            "who has it."
        )


def import_source_default() -> Source:
    source, _ = Source.objects.get_or_create(
        name=IMPORT_DEFAULT_SOURCE,
        defaults={"kind": SourceKind.IMPORT, "default_marketing": False},
    )
    return source


def _check_import_source(source: Source) -> None:
    if source.kind != SourceKind.IMPORT:
        raise ImportFileError(
            f"The source “{source.name}” is a {source.get_kind_display()} source; an import "
            "records a source of the kind “Import”."
        )


def contact_import_create(
    *,
    file,
    file_name: str,
    actor=None,
    source: Source | None = None,
    mapping: dict | None = None,
    marketing: bool = False,
) -> ContactImport:
    """Store an uploaded CSV and read its header; nothing is imported yet.

    `file` is a Django File (an upload, or `File(open(path, "rb"))`). Refused with
    `ImportFileError` (too big, not UTF-8, no header, a bad mapping) or
    `ImportNotAllowed` (marketing without the permission) before anything is stored.
    """
    _check_marketing_allowed(actor, marketing)
    size = file.size
    import_check_size(size)
    source = source or import_source_default()
    _check_import_source(source)
    file.seek(0)
    head = _read_head(file.read(IMPORT_HEAD_BYTES))
    resolved = import_resolve_mapping(head.columns, mapping)
    digest = hashlib.sha256()
    file.seek(0)
    for chunk in file.chunks():
        digest.update(chunk)
    file.seek(0)
    contact_import = ContactImport(
        file_name=(file_name or "import.csv")[:255],
        file_size=size,
        file_hash=digest.hexdigest(),
        delimiter=head.delimiter,
        columns=head.columns,
        mapping=resolved,
        marketing=marketing,
        source=source,
        created_by=actor if getattr(actor, "pk", None) else None,
    )
    contact_import.file.save(contact_import.file_name, file, save=False)
    try:
        contact_import.save()
    except Exception:
        contact_import.file.delete(save=False)
        raise
    return contact_import


def contact_import_configure(
    *, contact_import: ContactImport, mapping: dict | None, marketing: bool, actor=None
) -> ContactImport:
    """Change the mapping or the marketing flag before the commit; the preview must be redone."""
    if contact_import.status not in (ImportStatus.DRAFT, ImportStatus.PREVIEWED):
        raise ImportStateError("This import was already committed; its mapping is fixed.")
    _check_marketing_allowed(actor, marketing)
    contact_import.mapping = import_resolve_mapping(contact_import.columns, mapping)
    contact_import.marketing = marketing
    contact_import.status = ImportStatus.DRAFT
    contact_import.preview = {}
    contact_import.save(update_fields=["mapping", "marketing", "status", "preview", "updated_at"])
    return contact_import


# --- reading and staging


ImportProgress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class _Batch:
    rows: list[tuple]  # (line, email, first_name, …): IMPORT_STAGED_FIELDS' values, None = empty
    errors: list[tuple[int, str, str]]  # (line, column, message)
    read: int  # data rows read so far (blank lines not counted)
    invalid: int  # rows of this batch with an error


def _open_text(contact_import: ContactImport):
    handle = contact_import.file.storage.open(contact_import.file.name, "rb")
    return io.TextIOWrapper(getattr(handle, "file", handle), encoding="utf-8-sig", newline="")


def _cleaner(spec: ImportField):
    """A function raw → (value or None, error message or None) for one column."""
    if spec.kind == "email":

        def clean(raw: str):
            value = raw.strip().lower()
            if not value:
                return None, "The email is empty: every row needs one."
            if len(value) <= spec.max_length and _EMAIL_FAST.fullmatch(value):
                return value, None
            if len(value) > spec.max_length:
                return None, f"The email is longer than {spec.max_length} characters."
            try:
                validate_email(value)
            except Exception:
                return None, f"“{raw.strip()[:100]}” is not a valid email address."
            return value, None

    elif spec.kind == "text":
        limit = spec.max_length

        def clean(raw: str):
            value = raw.strip()
            if not value:
                return None, None
            if len(value) > limit:
                return None, f"Longer than {limit} characters ({len(value)})."
            return value, None

    elif spec.kind == "choice":
        table = dict(spec.choices)
        allowed = ", ".join(dict.fromkeys(spec.choices.values()))

        def clean(raw: str):
            value = table.get(raw)
            if value is not None:
                return value, None
            if not raw.strip():
                return None, None
            value = table.get(_key(raw))
            if value is None:
                return None, f"“{raw.strip()[:100]}” is not a {spec.label.lower()} ({allowed})."
            if len(table) < 1_000:  # remember the spelling: the same few values repeat
                table[raw] = value
            return value, None

    else:  # flag: an import may record an unsubscribe or a bounce, never clear one

        def clean(raw: str):
            value = raw.strip().lower()
            if value in _TRUE:
                return True, None
            if value in _FALSE:
                return None, None
            return None, f"“{raw.strip()[:100]}” is not yes or no."

    return clean


def _read_batches(contact_import: ContactImport, size: int) -> Iterator[_Batch]:
    """The file's rows, normalised and checked, `size` at a time. Streams: one batch in memory."""
    columns = contact_import.columns
    by_field = {
        name: columns.index(column) for column, name in contact_import.mapping.items() if name
    }
    plan = [
        (by_field[name], _cleaner(IMPORT_FIELDS[name]), columns[by_field[name]])
        if name in by_field
        else None
        for name in IMPORT_STAGED_FIELDS
    ]
    # The per-row loop visits only the mapped fields (this loop is most of an import's
    # Python time: about 3 µs a row).
    mapped = [(position, *step) for position, step in enumerate(plan, start=1) if step]
    template: list = [None] * (len(plan) + 1)
    csv.field_size_limit(1_000_000)
    read = invalid = in_batch = 0
    rows: list[tuple] = []
    errors: list[tuple[int, str, str]] = []
    try:
        with _open_text(contact_import) as text:
            reader = csv.reader(text, delimiter=contact_import.delimiter)
            next(reader, None)  # the header
            end = reader.line_num
            for record in reader:
                line, end = end + 1, reader.line_num
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue  # a blank line
                read += 1
                in_batch += 1
                values = template.copy()  # the unmapped fields stay None
                values[0] = line
                bad = False
                length = len(record)
                for position, index, clean, column in mapped:
                    value, message = clean(record[index] if index < length else "")
                    if message is not None:
                        errors.append((line, column, message))
                        bad = True
                    values[position] = value
                if bad:
                    invalid += 1
                else:
                    rows.append(tuple(values))
                if in_batch >= size:
                    yield _Batch(rows, errors, read, invalid)
                    rows, errors, invalid, in_batch = [], [], 0, 0
    except UnicodeDecodeError as error:
        raise ImportFileError(
            f"The file is not UTF-8 text after line {end}: save it as “CSV UTF-8” and "
            "upload it again."
        ) from error
    except csv.Error as error:
        raise ImportFileError(f"Line {end + 1} cannot be read as CSV: {error}.") from error
    yield _Batch(rows, errors, read, invalid)


def _fast_path() -> bool:
    return connection.vendor == "postgresql" and not _IMPORT_FORCE_PORTABLE


_STAGE_COLUMNS = "line, " + ", ".join(IMPORT_STAGED_FIELDS)


def _stage_ddl(table: str) -> str:
    columns = ", ".join(
        f"{name} {'BOOLEAN' if IMPORT_FIELDS[name].kind == 'flag' else 'TEXT'}"
        + (" NOT NULL" if name == "email" else "")
        for name in IMPORT_STAGED_FIELDS
    )
    return f"CREATE TEMPORARY TABLE {table} (line INTEGER NOT NULL, {columns})"


def _drop_staging(cursor) -> None:
    cursor.execute(f"DROP TABLE IF EXISTS {_STAGE}")


def _write_errors(contact_import_id: int, errors: list[tuple[int, str, str]]) -> None:
    if errors:
        ImportRowError.objects.bulk_create(
            (
                ImportRowError(
                    contact_import_id=contact_import_id,
                    line=line,
                    column=column[:200],
                    message=message[:500],
                )
                for line, column, message in errors
            ),
            batch_size=IMPORT_ERROR_BATCH,
        )


@dataclass
class _Staged:
    rows: int = 0  # data rows in the file
    invalid: int = 0  # rows with an error (not imported)
    duplicates: int = 0  # rows whose email a later row repeats (not imported)
    kept: int = 0  # rows to upsert, one per email
    last_line: int = 1  # the file's last staged line (the header is line 1)


def _stage(contact_import: ContactImport, progress: ImportProgress | None) -> _Staged:
    """Read the file into the staging table `import_stage`: one row per email (the file's
    last), row errors written afresh. Outside a transaction, others see the progress;
    the staging table lives as long as the connection (dropped by the caller)."""
    ImportRowError.objects.filter(contact_import=contact_import).delete()
    staged = _Staged()
    fast = _fast_path()
    total = contact_import.rows or 0
    with connection.cursor() as cursor:
        _drop_staging(cursor)
        cursor.execute(_stage_ddl(_STAGE))
        for batch in _read_batches(contact_import, IMPORT_STAGE_BATCH):
            if batch.rows:
                if fast:
                    with cursor.cursor.copy(f"COPY {_STAGE} ({_STAGE_COLUMNS}) FROM STDIN") as copy:
                        for row in batch.rows:
                            copy.write_row(row)
                else:
                    marks = ", ".join(["%s"] * (len(IMPORT_STAGED_FIELDS) + 1))
                    cursor.executemany(
                        f"INSERT INTO {_STAGE} ({_STAGE_COLUMNS}) VALUES ({marks})", batch.rows
                    )
                staged.last_line = batch.rows[-1][0]
            _write_errors(contact_import.pk, batch.errors)
            staged.rows = batch.read
            staged.invalid += batch.invalid
            if progress:
                progress("reading", staged.rows, max(total, staged.rows))
        _dedupe(cursor, contact_import)
        cursor.execute(f"SELECT COUNT(*) FROM {_STAGE}")
        staged.kept = cursor.fetchone()[0]
    staged.duplicates = staged.rows - staged.invalid - staged.kept
    return staged


def _dedupe(cursor, contact_import: ContactImport) -> None:
    """Keep the last row of each email and index the staging table for the upsert.

    The unique email index the upsert reads by is tried first: a file without
    duplicates (the usual case) costs one sort. When it fails, the earlier rows of each
    repeated email become row errors and leave the table, and the index is built again.
    """
    postgresql = connection.vendor == "postgresql"
    if postgresql:  # sort in memory, not on disk (the session's setting, reset by the caller)
        cursor.execute(f"SET maintenance_work_mem = '{IMPORT_SORT_MEMORY}'")
    unique = f"CREATE UNIQUE INDEX {_STAGE}_email ON {_STAGE} (email)"
    try:
        with transaction.atomic():
            cursor.execute(unique)
    except IntegrityError:
        email_column = next(c for c, name in contact_import.mapping.items() if name == "email")
        repeated = (
            f"FROM {_STAGE} s JOIN (SELECT email, MAX(line) AS last FROM {_STAGE} "
            "GROUP BY email HAVING COUNT(*) > 1) d ON d.email = s.email WHERE s.line < d.last"
        )
        cursor.execute(
            f'INSERT INTO {ImportRowError._meta.db_table} (contact_import_id, line, "column", '
            "message) SELECT %s, s.line, %s, 'Duplicate: ' || s.email || ' is also on line ' || "
            "CAST(d.last AS TEXT) || ', the last row with this email, which is imported instead.' "
            + repeated,
            [contact_import.pk, email_column[:200]],
        )
        cursor.execute(f"DELETE FROM {_STAGE} WHERE line IN (SELECT s.line {repeated})")
        cursor.execute(unique)
    if not (postgresql and not _IMPORT_FORCE_PORTABLE):  # the portable upsert walks lines
        cursor.execute(f"CREATE INDEX {_STAGE}_line ON {_STAGE} (line)")
    if postgresql:
        cursor.execute("RESET maintenance_work_mem")
    cursor.execute(f"ANALYZE {_STAGE}")


# --- comparing and upserting


def _changed_sql(s: str, c: str) -> str:
    """SQL: the staged row `s` has a non-empty value its contact `c` lacks (flags: only yes)."""
    parts = [f"({s}.{n} IS NOT NULL AND {s}.{n} <> {c}.{n})" for n in _TEXT_FIELDS]
    parts += [f"({s}.{n} AND NOT {c}.{n})" for n in _FLAG_FIELDS]
    return "(" + " OR ".join(parts) + ")"


def _apply_row(contact: Contact, staged: dict) -> bool:
    """Python twin of `_changed_sql` and the upsert's SET: the non-empty values, flags only
    ever set. True when the contact changed."""
    changed = False
    for name in _TEXT_FIELDS:
        value = staged[name]
        if value is not None and value != getattr(contact, name):
            setattr(contact, name, value)
            changed = True
    for name in _FLAG_FIELDS:
        if staged[name] and not getattr(contact, name):
            setattr(contact, name, True)
            changed = True
    return changed


@dataclass
class _ChangeCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0


def _count_changes() -> _ChangeCounts:
    """What the upsert would do to the staged rows: new, updated, unchanged (one query)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COALESCE(SUM(CASE WHEN c.id IS NULL THEN 1 ELSE 0 END), 0), "
            f"COALESCE(SUM(CASE WHEN c.id IS NOT NULL AND {_changed_sql('s', 'c')} THEN 1 ELSE 0 END), 0), "
            f"COUNT(c.id) FROM {_STAGE} s LEFT JOIN {_CONTACT} c ON c.email = s.email"
        )
        new, updated, existing = cursor.fetchone()
    return _ChangeCounts(new=int(new), updated=int(updated), unchanged=int(existing) - int(updated))


_UPSERT_COLUMNS = (
    "created_at, updated_at, email, " + ", ".join(IMPORT_STAGED_FIELDS[1:]) + ", lead_score, "
    "last_engaged_at, source_id, marketing_status, marketing_until, marketing_reason_type, "
    "marketing_reason_id, marketing_reason_name, marketing_changed_at"
)


def _upsert_sql() -> str:
    """PostgreSQL: one statement for the staged emails in (lo, hi] (None: unbounded).

    New emails are inserted non-marketing with the import's source. An existing email
    takes the staged row's non-empty values — read back from the staging table by its
    unique email index, because EXCLUDED cannot tell an empty cell from a default —
    and only when something differs (WHERE), so a re-run writes nothing. No status
    column is in the SET list.
    """
    inserted = ", ".join(
        f"COALESCE(s.{n}, {'FALSE' if n in _FLAG_FIELDS else repr(_INSERT_DEFAULTS.get(n, ''))})"
        for n in IMPORT_STAGED_FIELDS[1:]
    )
    updated = ", ".join(
        [f"COALESCE(s2.{n}, c.{n})" for n in _TEXT_FIELDS]
        + [f"c.{n} OR COALESCE(s2.{n}, FALSE)" for n in _FLAG_FIELDS]
    )
    return f"""
        WITH up AS (
            INSERT INTO {_CONTACT} AS c ({_UPSERT_COLUMNS})
            SELECT %(now)s, %(now)s, s.email, {inserted}, 0, NULL, %(source)s, '{_N}', NULL,
                   '', '', '', NULL
            FROM {_STAGE} s
            WHERE (%(lo)s IS NULL OR s.email > %(lo)s) AND (%(hi)s IS NULL OR s.email <= %(hi)s)
            ORDER BY s.email
            ON CONFLICT (email) DO UPDATE SET
                ({", ".join(_TEXT_FIELDS + _FLAG_FIELDS)}, updated_at) =
                (SELECT {updated}, %(now)s FROM {_STAGE} s2 WHERE s2.email = EXCLUDED.email)
            WHERE EXISTS (
                SELECT 1 FROM {_STAGE} s2
                WHERE s2.email = EXCLUDED.email AND {_changed_sql("s2", "c")}
            )
            RETURNING (xmax = 0) AS inserted
        )
        SELECT inserted, COUNT(*) FROM up GROUP BY inserted
    """


def _email_bounds(cursor, kept: int) -> list[str | None]:
    """Every IMPORT_UPSERT_BATCH-th staged email, in order: the chunk bounds (one index scan)."""
    cursor.execute(
        f"SELECT email FROM (SELECT email, row_number() OVER (ORDER BY email) AS r "
        f"FROM {_STAGE}) x WHERE r %% %s = 0 AND r < %s ORDER BY email",
        [IMPORT_UPSERT_BATCH, kept],
    )
    return [None, *(row[0] for row in cursor.fetchall()), None]


def _upsert_postgresql(
    contact_import: ContactImport, staged: _Staged, report: ImportProgress
) -> tuple[int, int]:
    """Chunks of the staged rows in email order (walking the staging table's unique email
    index), so each chunk fills the contacts' email indexes left to right."""
    sql = _upsert_sql()
    created = updated = 0
    now = timezone.now()
    with connection.cursor() as cursor:
        bounds = _email_bounds(cursor, staged.kept)
        for number, (lo, hi) in enumerate(zip(bounds, bounds[1:], strict=False), start=1):
            cursor.execute(
                sql, {"now": now, "source": contact_import.source_id, "lo": lo, "hi": hi}
            )
            for was_inserted, count in cursor.fetchall():
                if was_inserted:
                    created += count
                else:
                    updated += count
            report("saving", min(number * IMPORT_UPSERT_BATCH, staged.kept), staged.kept)
    return created, updated


def _upsert_portable(
    contact_import: ContactImport, staged: _Staged, report: ImportProgress
) -> tuple[int, int]:
    """Any database: chunks of staged rows, bulk_create the new, bulk_update the changed."""
    fields = IMPORT_STAGED_FIELDS[1:]
    created = updated = done = 0
    last = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT line, {', '.join(IMPORT_STAGED_FIELDS)} FROM {_STAGE} "
                "WHERE line > %s ORDER BY line LIMIT %s",
                [last, IMPORT_PORTABLE_BATCH],
            )
            rows = cursor.fetchall()
        if not rows:
            break
        last = rows[-1][0]
        chunk = {
            email: {
                name: (bool(value) if value is not None and name in _FLAG_FIELDS else value)
                for name, value in zip(fields, values, strict=True)
            }
            for _line, email, *values in rows
        }
        for attempt in (1, 2):
            existing = Contact.objects.filter(email__in=list(chunk)).only("id", "email", *fields)
            found = {contact.email: contact for contact in existing}
            now = timezone.now()
            creates = [
                Contact(
                    email=email,
                    source_id=contact_import.source_id,
                    **{
                        name: (
                            value
                            if value is not None
                            else (False if name in _FLAG_FIELDS else _INSERT_DEFAULTS.get(name, ""))
                        )
                        for name, value in values.items()
                    },
                )
                for email, values in chunk.items()
                if email not in found
            ]
            changes = [c for email, c in found.items() if _apply_row(c, chunk[email])]
            for contact in changes:
                contact.updated_at = now
            try:
                with transaction.atomic():
                    Contact.objects.bulk_create(creates, batch_size=IMPORT_PORTABLE_BATCH)
                    Contact.objects.bulk_update(
                        changes, [*fields, "updated_at"], batch_size=IMPORT_PORTABLE_BATCH
                    )
            except IntegrityError:
                if attempt == 2:
                    raise
                continue  # someone created one of these emails meanwhile: read them again
            break
        created += len(creates)
        updated += len(changes)
        done += len(rows)
        report("saving", done, staged.kept)
    return created, updated


def _import_target(contact_import: ContactImport) -> QuerySet:
    members = ImportedContact.objects.filter(contact_import_id=contact_import.pk)
    return Contact.objects.filter(pk__in=members.values("contact_id"))


def _record_members(contact_import: ContactImport) -> None:
    """The marketing import's contacts, by email, into ImportedContact (once each)."""
    table = ImportedContact._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (contact_import_id, contact_id) "
            f"SELECT %s, c.id FROM {_STAGE} s JOIN {_CONTACT} c ON c.email = s.email "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table} m "
            "WHERE m.contact_import_id = %s AND m.contact_id = c.id)",
            [contact_import.pk, contact_import.pk],
        )


def _json_preview(preview: StatusPreview) -> dict:
    data = asdict(preview)
    for key, value in data.items():
        if isinstance(value, dt.datetime):
            data[key] = value.isoformat()
    return data


def contact_import_preview(*, contact_import: ContactImport, actor=None) -> ContactImport:
    """Read the whole file and say what committing it would do; contacts are not touched.

    `preview` holds: rows, new, updated, unchanged, invalid, duplicates, becomes_marketing
    (0 unless the import is marked marketing), marketing_candidates (what marking it
    would make marketing), the status service's preview of that change — its `extra`
    carries billing's cost, new contacts counted through `additional` — and
    `same_file` (earlier imports of the same bytes). Row errors are stored already.
    """
    if contact_import.status not in (ImportStatus.DRAFT, ImportStatus.PREVIEWED):
        raise ImportStateError("This import was already committed; there is nothing to preview.")
    _check_marketing_allowed(actor, contact_import.marketing)
    try:
        staged = _stage(contact_import, None)
        counts = _count_changes()
        existing = Contact.objects.filter(email__in=RawSQL(f"SELECT email FROM {_STAGE}", []))
        status = contacts_status_preview(
            contacts=existing, operation=SET_MARKETING, additional=counts.new
        )
    except ImportFileError as error:
        _fail(contact_import, str(error))
        raise
    finally:
        with connection.cursor() as cursor:
            _drop_staging(cursor)
    candidates = status.would_change + status.would_cancel
    contact_import.preview = {
        "rows": staged.rows,
        "new": counts.new,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
        "invalid": staged.invalid,
        "duplicates": staged.duplicates,
        "marketing_candidates": candidates,
        "becomes_marketing": candidates if contact_import.marketing else 0,
        "already_marketing": status.already,
        "status_preview": _json_preview(status),
        "same_file": list(
            ContactImport.objects.filter(
                file_hash=contact_import.file_hash,
                status__in=[ImportStatus.DONE, ImportStatus.HELD],
            )
            .exclude(pk=contact_import.pk)
            .order_by("-pk")
            .values_list("pk", flat=True)[:5]
        ),
    }
    contact_import.rows = staged.rows
    contact_import.invalid_count = staged.invalid
    contact_import.duplicate_count = staged.duplicates
    contact_import.total_rows = staged.rows
    contact_import.status = ImportStatus.PREVIEWED
    contact_import.previewed_at = timezone.now()
    contact_import.save()
    return contact_import


def contact_import_commit(
    *, contact_import: ContactImport, actor=None, enqueue: bool = True
) -> ContactImport:
    """Queue a previewed import's job (after commit). Committing again changes nothing."""
    _check_marketing_allowed(actor, contact_import.marketing)
    with transaction.atomic():
        locked = ContactImport.objects.select_for_update().get(pk=contact_import.pk)
        if locked.status == ImportStatus.DRAFT:
            raise ImportStateError(
                "Preview the import before committing it (its mapping changed since the last "
                "preview, or it was never previewed)."
            )
        if locked.status == ImportStatus.FAILED:
            raise ImportStateError(f"This import failed and cannot run: {locked.message}")
        if locked.status != ImportStatus.PREVIEWED:
            return locked  # queued, running or finished already
        locked.status = ImportStatus.QUEUED
        locked.phase = "queued"
        locked.processed_rows = 0
        locked.committed_by = actor if getattr(actor, "pk", None) else None
        locked.committed_at = timezone.now()
        locked.save()
        if enqueue:
            from contacts.tasks import run_contact_import

            pk = locked.pk
            jobs.enqueue(run_contact_import, pk)
    return locked


def _fail(contact_import: ContactImport, message: str) -> None:
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ImportStatus.FAILED, message=message, phase="", finished_at=timezone.now()
    )
    contact_import.refresh_from_db()


def contact_import_run(
    *, contact_import_id: int, progress: ImportProgress | None = None
) -> ContactImport:
    """The background job: stage the file, upsert the contacts, then the marketing part.

    Runs a queued import (or one left running by a crashed worker); anything else is
    returned as it is. Safe to run again: the upsert writes only what differs and the
    status change has the idempotency key "import:<id>:marketing". Row errors are
    written afresh. Progress (phase, processed / total rows) is written as it goes.
    """
    started = timezone.now()
    claimed = ContactImport.objects.filter(
        pk=contact_import_id, status__in=[ImportStatus.QUEUED, ImportStatus.RUNNING]
    ).update(status=ImportStatus.RUNNING, started_at=started, phase="reading", processed_rows=0)
    contact_import = ContactImport.objects.select_related("source", "committed_by").get(
        pk=contact_import_id
    )
    if not claimed:
        return contact_import

    def report(phase: str, done: int, total: int) -> None:
        ContactImport.objects.filter(pk=contact_import_id).update(
            phase=phase, processed_rows=done, total_rows=total
        )
        if progress:
            progress(phase, done, total)

    fast = _fast_path()
    try:
        staged = _stage(contact_import, report)
        report("saving", 0, staged.kept)
        upsert = _upsert_postgresql if fast else _upsert_portable
        created, updated = upsert(contact_import, staged, report)
        fields = {
            "rows": staged.rows,
            "invalid_count": staged.invalid,
            "duplicate_count": staged.duplicates,
            "created_count": created,
            "updated_count": updated,
            "unchanged_count": staged.kept - created - updated,
            "status": ImportStatus.DONE,
            "message": "",
        }
        if contact_import.marketing:
            report("marketing", 0, staged.kept)
            fields.update(_marketing_part(contact_import))
        if created or updated:
            _import_notify_changed(started)  # while the staging table still names them
    except ImportFileError as error:
        _fail(contact_import, str(error))
        return contact_import
    except Exception as error:  # recorded on the import; the worker's log has the trace
        logger.exception("import %s failed", contact_import_id)
        _fail(
            contact_import, f"The import stopped on an internal error ({error.__class__.__name__})."
        )
        return contact_import
    finally:
        with connection.cursor() as cursor:
            _drop_staging(cursor)
    fields.update(phase="", finished_at=timezone.now())
    fields["processed_rows"] = fields["total_rows"] = staged.kept
    ContactImport.objects.filter(pk=contact_import_id).update(**fields)
    contact_import.refresh_from_db()
    return contact_import


IMPORT_NOTIFY_BATCH = 5_000  # ids per contact-listener notification (~40 KB)


def _import_notify_changed(started: dt.datetime) -> None:
    """The contacts an import created or updated (their updated_at moved), to the contact
    listeners (event-triggered workflows), a batch of ids at a time. Read through the
    staging table's emails (the contacts' unique email index): the cost follows the
    import, not the contacts table."""
    from contacts.hooks import has_contact_listeners

    if not has_contact_listeners():
        return
    ids = (
        Contact.objects.filter(
            email__in=RawSQL(f"SELECT email FROM {_STAGE}", []), updated_at__gte=started
        )
        .order_by()
        .values_list("pk", flat=True)
    )
    batch: list[int] = []
    for pk in ids.iterator(chunk_size=IMPORT_NOTIFY_BATCH):
        batch.append(pk)
        if len(batch) == IMPORT_NOTIFY_BATCH:
            contacts_changed(batch)
            batch = []
    contacts_changed(batch)


def _marketing_part(contact_import: ContactImport) -> dict:
    """Make the import's contacts marketing: one guarded set-based call of the status service.

    Held by billing's guardrails (`ChangeHeld`): the contacts stay non-marketing and the
    import is HELD; an approver runs the same change later (same idempotency key,
    the same durable target), and `contact_import_sync` then marks the import done.
    """
    _record_members(contact_import)
    target = _import_target(contact_import)
    key = contact_import.marketing_idempotency_key
    if not StatusChangeRequest.objects.filter(idempotency_key=key).exists():
        preview = contacts_status_preview(contacts=target, operation=SET_MARKETING)
        if not (preview.would_change or preview.would_cancel):
            return {"marketing_count": 0, "marketing_result": {"already": preview.already}}
    try:
        result = contacts_set_marketing(
            contacts=target,
            source=StatusSource(
                StatusSourceType.IMPORT, id=str(contact_import.pk), name=contact_import.file_name
            ),
            actor=contact_import.committed_by or contact_import.created_by,
            idempotency_key=key,
            guarded=True,
        )
    except ChangeHeld as held:
        return {
            "status": ImportStatus.HELD,
            "message": (
                f"The contacts were imported as non-marketing; setting them as marketing is held. "
                f"{held}"
            ),
        }
    return {
        "marketing_count": result.changed + result.cancelled,
        "marketing_result": result.as_dict(),
    }


def contact_import_sync(*, contact_import: ContactImport) -> ContactImport:
    """A held import whose marketing part an approver has run since: mark it done."""
    if contact_import.status != ImportStatus.HELD:
        return contact_import
    request = StatusChangeRequest.objects.filter(
        idempotency_key=contact_import.marketing_idempotency_key
    ).first()
    if request is None:
        return contact_import
    result = request.result or {}
    ContactImport.objects.filter(pk=contact_import.pk, status=ImportStatus.HELD).update(
        status=ImportStatus.DONE,
        marketing_result=result,
        marketing_count=result.get("changed", 0) + result.get("cancelled", 0),
        message="The marketing part was approved and has run.",
    )
    contact_import.refresh_from_db()
    return contact_import


def contact_import_discard(*, contact_import: ContactImport) -> None:
    """Delete an import that was never committed, with its file and row errors."""
    if contact_import.status not in (
        ImportStatus.DRAFT,
        ImportStatus.PREVIEWED,
        ImportStatus.FAILED,
    ):
        raise ImportStateError("A committed import is a record of what was imported; it stays.")
    contact_import.file.delete(save=False)
    contact_import.delete()


# --- communications: the marketing-send guard, unsubscribe, ad audiences, lists ---
#
# Marketing email: `marketing_email_send` starts a send (or, given `contacts`, sends to
# them now: workflows); `marketing_email_deliver` is the only code that sends marketing
# email, and it asks the guard (`contacts.selectors.marketing_recipients`) at every
# chunk. Non-marketing communication: `communication_send`, to anyone, logged by type.

# Recipients per chunk: claimed in one INSERT, sent over one mail connection, confirmed in
# one UPDATE. A worker killed mid-chunk leaves at most this many sends unconfirmed.
SEND_CHUNK_SIZE = 200
UNSUBSCRIBE_SALT = "contacts.unsubscribe"


class SendRefused(Exception):
    """A send the communication services refuse; the message is meant for the user."""


class AlreadySent(SendRefused):
    pass


class InvalidUnsubscribeToken(Exception):
    pass


@dataclass
class DeliveryResult:
    """What one `marketing_email_deliver` run did (its own claims only)."""

    sent: int = 0
    failed: int = 0
    chunks: int = 0
    done: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SendOutcome:
    email_id: int
    status: str
    breakdown: object  # contacts.selectors.SendBreakdown, at the moment of the call
    delivery: DeliveryResult | None = None  # when sent in this process (explicit contacts)


def unsubscribe_token(*, contact_id: int, email_id: int | None) -> str:
    """A signed token naming the contact and the email: cannot be forged or re-aimed."""
    from django.core import signing

    # No timestamp: one stable link per (contact, email), valid as long as the email exists.
    return signing.Signer(salt=UNSUBSCRIBE_SALT).sign_object({"c": int(contact_id), "e": email_id})


def unsubscribe_token_read(token: str) -> tuple[int, int | None]:
    from django.core import signing

    try:
        data = signing.Signer(salt=UNSUBSCRIBE_SALT).unsign_object(token)
    except (signing.BadSignature, ValueError) as error:
        raise InvalidUnsubscribeToken("This unsubscribe link is not valid.") from error
    contact_id, email_id = (data.get("c"), data.get("e")) if isinstance(data, dict) else (0, 0)
    if not isinstance(contact_id, int) or not (email_id is None or isinstance(email_id, int)):
        raise InvalidUnsubscribeToken("This unsubscribe link is not valid.")
    return contact_id, email_id


def unsubscribe_url(*, contact_id: int, email_id: int | None) -> str:
    from django.conf import settings
    from django.urls import reverse

    token = unsubscribe_token(contact_id=contact_id, email_id=email_id)
    return settings.PUBLIC_BASE_URL.rstrip("/") + reverse("unsubscribe", args=[token])


@dataclass
class UnsubscribeResult:
    contact: Contact
    already: bool


def contact_unsubscribe(*, token: str, at: dt.datetime | None = None) -> UnsubscribeResult:
    """Unsubscribe the token's contact from marketing email (idempotent) and log it.

    The status is untouched: suppression and marketing status are separate facts.
    """
    from contacts.models import MarketingEmail, Unsubscription

    contact_id, email_id = unsubscribe_token_read(token)
    with transaction.atomic():
        contact = Contact.objects.select_for_update().filter(pk=contact_id).first()
        if contact is None:
            raise InvalidUnsubscribeToken("This unsubscribe link is no longer valid.")
        if contact.unsubscribed:
            return UnsubscribeResult(contact=contact, already=True)
        contact_update(contact=contact, unsubscribed=True)
        known_email = email_id is not None and MarketingEmail.objects.filter(pk=email_id).exists()
        Unsubscription.objects.create(
            contact_id=contact.pk,
            email_id=email_id if known_email else None,
            at=at or timezone.now(),
        )
    return UnsubscribeResult(contact=contact, already=False)


def marketing_email_validate(*, email) -> None:
    """The email can be sent: body with its unsubscribe placeholder, one valid audience."""
    from contacts.selectors import marketing_email_audience

    email.full_clean()
    marketing_email_audience(email=email)  # a stored filter that no longer validates


def _marketing_message(email, *, contact_id: int, to: str, first_name: str, connection):
    from django.core.mail import EmailMessage

    from contacts.models import FIRST_NAME_PLACEHOLDER, UNSUBSCRIBE_PLACEHOLDER

    url = unsubscribe_url(contact_id=contact_id, email_id=email.pk)
    body = email.body.replace(UNSUBSCRIBE_PLACEHOLDER, url).replace(
        FIRST_NAME_PLACEHOLDER, first_name or ""
    )
    return EmailMessage(
        subject=email.subject,
        body=body,
        from_email=email.from_email or None,
        to=[to],
        connection=connection,
        # RFC 8058 one-click unsubscribe: the mailbox provider POSTs to the same page.
        headers={
            "List-Unsubscribe": f"<{url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


def marketing_email_deliver(
    *,
    email,
    contacts: QuerySet,
    max_chunks: int | None = None,
    progress: Progress | None = None,
) -> DeliveryResult:
    """Send `email` to the contacts the guard lets through, chunk by chunk. Resumable.

    Each chunk: the next `SEND_CHUNK_SIZE` recipients by id that the guard accepts NOW and
    that have no EmailSend row for this email; claim them (one INSERT, ON CONFLICT DO
    NOTHING, tagged with this run's token); send exactly the rows this run inserted, one
    EmailMessage each over one connection; confirm them (one UPDATE for the sent, one per
    distinct failure). A rerun after a crash finds the claimed rows and skips them: at
    most once per (email, contact). `max_chunks` lets a task stop and re-enqueue itself.
    """
    from django.core.mail import get_connection
    from django.db.models import Exists, OuterRef

    from contacts.models import EmailSend, EmailSendStatus, MarketingEmail
    from contacts.selectors import marketing_recipients

    claim = str(uuid.uuid4())
    result = DeliveryResult()
    already = EmailSend.objects.filter(email_id=email.pk, contact_id=OuterRef("pk"))
    last = 0
    mail = get_connection()
    while max_chunks is None or result.chunks < max_chunks:
        now = timezone.now()
        batch = list(
            marketing_recipients(contacts=contacts, at=now)
            .filter(~Exists(already), pk__gt=last)  # emailsend_once answers the probe
            .order_by("pk")
            .values_list("pk", "email", "first_name")[:SEND_CHUNK_SIZE]
        )
        if not batch:
            result.done = True
            break
        last = batch[-1][0]
        result.chunks += 1
        EmailSend.objects.bulk_create(
            [
                EmailSend(
                    email_id=email.pk,
                    contact_id=pk,
                    to_address=address,
                    status=EmailSendStatus.CLAIMED,
                    claim=claim,
                    at=now,
                )
                for pk, address, _ in batch
            ],
            ignore_conflicts=True,
        )
        mine = set(
            EmailSend.objects.filter(
                claim=claim, contact_id__in=[row[0] for row in batch]
            ).values_list("contact_id", flat=True)  # emailsend_claim_idx
        )
        sent: list[int] = []
        failed: dict[str, list[int]] = {}
        mail.open()
        try:
            for pk, address, first_name in batch:
                if pk not in mine:
                    continue  # another run claimed it first
                message = _marketing_message(
                    email, contact_id=pk, to=address, first_name=first_name, connection=mail
                )
                try:
                    message.send()
                except Exception as error:  # one bad address must not stop the others
                    failed.setdefault(f"{error.__class__.__name__}: {error}"[:1000], []).append(pk)
                else:
                    sent.append(pk)
        finally:
            mail.close()
        done_at = timezone.now()
        mine_rows = EmailSend.objects.filter(claim=claim)
        if sent:
            mine_rows.filter(contact_id__in=sent).update(status=EmailSendStatus.SENT, at=done_at)
        for error, ids in failed.items():
            mine_rows.filter(contact_id__in=ids).update(
                status=EmailSendStatus.FAILED, at=done_at, error=error
            )
        failures = sum(len(ids) for ids in failed.values())
        MarketingEmail.objects.filter(pk=email.pk).update(
            sent_count=F("sent_count") + len(sent), failed_count=F("failed_count") + failures
        )
        result.sent += len(sent)
        result.failed += failures
        if progress:
            progress(result.sent + result.failed, 0)
    return result


def marketing_email_finish(*, email) -> bool:
    """Mark a send whose audience is exhausted as sent (once); True if this call did."""
    from contacts.models import MarketingEmail, MarketingEmailStatus

    return bool(
        MarketingEmail.objects.filter(pk=email.pk, status=MarketingEmailStatus.SENDING).update(
            status=MarketingEmailStatus.SENT, sent_at=timezone.now()
        )
    )


def marketing_email_send(*, email, contacts: QuerySet | None = None, actor=None) -> SendOutcome:
    """Send a marketing email, only ever to marketing, subscribed, unbounced contacts.

    Without `contacts` (the admin and the API): the email's audience. A draft becomes
    "sending" with the breakdown stored, and the background task is enqueued after
    commit; a "sending" email is re-enqueued (a resume: only the rest is sent); a sent
    email raises `AlreadySent` and nothing is sent.

    With `contacts` (workflows, a QuerySet[Contact]): sends to those the guard accepts,
    now, in this process — the caller is already a background job — whatever the
    email's status, still at most once per contact.
    """
    from contacts.models import MarketingEmail, MarketingEmailStatus
    from contacts.selectors import marketing_email_audience, marketing_send_breakdown
    from contacts.tasks import send_marketing_email

    if contacts is not None:
        if not isinstance(contacts, QuerySet) or contacts.model is not Contact:
            raise TypeError("contacts must be a QuerySet[Contact]")
        marketing_email_validate(email=email)
        breakdown = marketing_send_breakdown(contacts=contacts, email=email)
        delivery = marketing_email_deliver(email=email, contacts=contacts)
        email.refresh_from_db()
        return SendOutcome(
            email_id=email.pk, status=email.status, breakdown=breakdown, delivery=delivery
        )
    with transaction.atomic():
        locked = MarketingEmail.objects.select_for_update().get(pk=email.pk)
        if locked.status == MarketingEmailStatus.SENT:
            raise AlreadySent(
                f"“{locked}” was already sent on {locked.sent_at:%Y-%m-%d %H:%M} UTC; "
                "nothing more was sent."
            )
        marketing_email_validate(email=locked)
        breakdown = marketing_send_breakdown(
            contacts=marketing_email_audience(email=locked), email=locked
        )
        if locked.status == MarketingEmailStatus.DRAFT:
            locked.status = MarketingEmailStatus.SENDING
            locked.send_started_at = timezone.now()
            locked.sent_by = actor if getattr(actor, "pk", None) else None
            locked.audience_count = breakdown.audience
            locked.recipient_count = breakdown.will_receive
            locked.excluded_non_marketing = breakdown.excluded_non_marketing
            locked.excluded_unsubscribed = breakdown.excluded_unsubscribed
            locked.excluded_bounced = breakdown.excluded_bounced
            locked.save()
        email_id = locked.pk
        jobs.enqueue(send_marketing_email, email_id)
    email.refresh_from_db()
    return SendOutcome(email_id=email.pk, status=email.status, breakdown=breakdown)


# A claimed row older than this is taken for a send that died between its claim and its
# confirmation (a worker killed mid-chunk): well beyond a chunk's few seconds of SMTP.
STALE_CLAIM_AGE = dt.timedelta(hours=1)


def marketing_email_release_stale_claims(
    *, email, older_than: dt.timedelta = STALE_CLAIM_AGE, actor=None
) -> int:
    """Let recipients whose send died mid-chunk be sent again; return how many.

    Sending is at most once: a row claimed but never confirmed (the worker died between
    the claim and the SMTP answer) blocks its contact for good. An operator who has
    checked that those messages did not go out releases them here: the stale claimed
    rows are deleted and the send resumes (a sent email goes back to "sending"), so the
    guard decides afresh who receives it. Sent and failed rows are never touched.
    """
    from contacts.models import EmailSend, EmailSendStatus, MarketingEmail, MarketingEmailStatus
    from contacts.tasks import send_marketing_email

    cutoff = timezone.now() - older_than
    with transaction.atomic():
        locked = MarketingEmail.objects.select_for_update().get(pk=email.pk)
        if locked.status == MarketingEmailStatus.DRAFT:
            return 0
        released, _ = EmailSend.objects.filter(
            email_id=locked.pk, status=EmailSendStatus.CLAIMED, at__lt=cutoff
        ).delete()
        if released:
            if locked.status == MarketingEmailStatus.SENT:
                locked.status = MarketingEmailStatus.SENDING
                locked.sent_at = None
                locked.save(update_fields=["status", "sent_at", "updated_at"])
            logger.info(
                "released %s stale claims of marketing email %s (by %s)", released, locked.pk, actor
            )
            jobs.enqueue(send_marketing_email, locked.pk)
    email.refresh_from_db()
    return released


def marketing_email_create(**fields):
    from contacts.models import MarketingEmail

    email = MarketingEmail(**fields)
    email.full_clean()
    email.save()
    return email


def marketing_email_update(*, email, **fields):
    """Change a draft; an email that started sending is history and refuses."""
    from contacts.models import MarketingEmailStatus

    if email.status != MarketingEmailStatus.DRAFT:
        raise SendRefused(f"“{email}” is {email.get_status_display().lower()}: it cannot change.")
    for name, value in fields.items():
        setattr(email, name, value)
    email.full_clean()
    email.save()
    return email


def marketing_email_delete(*, email) -> None:
    from contacts.models import MarketingEmailStatus

    if email.status != MarketingEmailStatus.DRAFT or email.sends.exists():
        raise SendRefused(f"“{email}” has been sent to contacts: its send log is kept.")
    email.delete()


# --- memberships: ad audiences (marketing only) and static lists ---


@dataclass
class MembershipChange:
    """What adding to / removing from an audience or a list did (or would do)."""

    operation: str  # "add" or "remove"
    matched: int = 0
    added: int = 0
    already_member: int = 0
    refused_non_marketing: int = 0
    removed: int = 0
    not_member: int = 0
    preview: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def _membership_change(
    *,
    model,
    owner_field: str,
    owner_id: int,
    contacts: Target,
    operation: str,
    marketing_only: bool,
    preview: bool,
    at: dt.datetime | None = None,
) -> MembershipChange:
    """Set-based add/remove: per chunk one aggregate, then one INSERT … SELECT … ON CONFLICT
    DO NOTHING (PostgreSQL and SQLite alike) or one DELETE. No contact enters Python."""
    from django.db.models import Exists, OuterRef

    from contacts.selectors import marketing_q

    now = at or timezone.now()
    change = MembershipChange(operation=operation, preview=preview)
    member = Exists(model.objects.filter(**{owner_field: owner_id}, contact_id=OuterRef("pk")))
    allowed = marketing_q(now) if marketing_only else Q(pk__isnull=False)
    table = model._meta.db_table
    owner_column = model._meta.get_field(owner_field).column
    with transaction.atomic():
        for chunk in _chunks(_as_queryset_or_ids(contacts)):
            counts = chunk.queryset.order_by().aggregate(
                matched=Count("pk"),
                allowed=Count("pk", filter=allowed),
                member=Count("pk", filter=Q(member)),
                allowed_member=Count("pk", filter=allowed & Q(member)),
            )  # (none of these keys is a Contact field: an aggregate would shadow it)
            change.matched += counts["matched"]
            if operation == "add":
                change.refused_non_marketing += counts["matched"] - counts["allowed"]
                if preview:
                    change.already_member += counts["allowed_member"]
                    change.added += counts["allowed"] - counts["allowed_member"]
                    continue
                eligible_sql, eligible_params = (
                    chunk.queryset.filter(allowed).order_by().values("pk").query.sql_with_params()
                )
                sql, params = _sql(
                    f"INSERT INTO {table} ({owner_column}, contact_id, added_at) "
                    f"SELECT {{owner}}, id, {{now}} FROM {_CONTACT} WHERE id IN ({{eligible}}) "
                    f"ON CONFLICT ({owner_column}, contact_id) DO NOTHING",
                    owner=_p(owner_id),
                    now=_p(now),
                    eligible=(eligible_sql, list(eligible_params)),
                )
                with connection.cursor() as cursor:
                    cursor.execute(sql, params)
                    added = cursor.rowcount
                change.added += added
                change.already_member += counts["allowed"] - added
            else:
                if preview:
                    change.removed += counts["member"]
                    change.not_member += counts["matched"] - counts["member"]
                    continue
                removed, _ = model.objects.filter(
                    **{owner_field: owner_id}, contact_id__in=chunk.queryset.order_by().values("pk")
                ).delete()
                change.removed += removed
                change.not_member += counts["matched"] - removed
    return change


def ad_audience_add(
    *, audience, contacts: Target, actor=None, preview: bool = False, at=None
) -> MembershipChange:
    """Add contacts to an ad audience: marketing contacts only (DESIGN §1.1).

    Non-marketing contacts are refused and counted; unsubscribed or bounced marketing
    contacts are accepted (consent is about email, not ads). Idempotent.
    """
    from contacts.models import AdAudienceMembership

    return _membership_change(
        model=AdAudienceMembership,
        owner_field="audience",
        owner_id=audience.pk,
        contacts=contacts,
        operation="add",
        marketing_only=True,
        preview=preview,
        at=at,
    )


def ad_audience_remove(
    *, audience, contacts: Target, actor=None, preview: bool = False
) -> MembershipChange:
    """Remove contacts from an ad audience. Any contact may be removed: taking a
    non-marketing contact out of an audience is what the rule wants."""
    from contacts.models import AdAudienceMembership

    return _membership_change(
        model=AdAudienceMembership,
        owner_field="audience",
        owner_id=audience.pk,
        contacts=contacts,
        operation="remove",
        marketing_only=False,
        preview=preview,
    )


def contact_list_add(*, contact_list, contacts: Target, preview: bool = False) -> MembershipChange:
    """Add contacts to a static list (any contact: the send guard applies when mailing)."""
    from contacts.models import ContactListMembership

    return _membership_change(
        model=ContactListMembership,
        owner_field="contact_list",
        owner_id=contact_list.pk,
        contacts=contacts,
        operation="add",
        marketing_only=False,
        preview=preview,
    )


def contact_list_remove(
    *, contact_list, contacts: Target, preview: bool = False
) -> MembershipChange:
    from contacts.models import ContactListMembership

    return _membership_change(
        model=ContactListMembership,
        owner_field="contact_list",
        owner_id=contact_list.pk,
        contacts=contacts,
        operation="remove",
        marketing_only=False,
        preview=preview,
    )


# --- non-marketing communication ---

MARKETING_TYPE = "marketing"


def communication_send(
    *,
    contact: Contact,
    type: str,
    subject: str,
    body: str,
    actor=None,
    from_email: str | None = None,
    idempotency_key: str | None = None,
):
    """Send a non-marketing email (sales, transactional, registration, chat transcript,
    ticket reply, feedback survey) to any contact — marketing or not, unsubscribed or
    not — through the mail backend, and log it with its type.

    Refuses "marketing": marketing email goes through `marketing_email_send` and its
    guard. The log row is claimed before the send: a retry with the same
    `idempotency_key` returns the first row and sends nothing.
    """
    from django.core.mail import EmailMessage
    from django.db import IntegrityError

    from contacts.models import Communication, CommunicationType, EmailSendStatus

    if type == MARKETING_TYPE:
        raise SendRefused(
            "Marketing email cannot be sent as a communication: create a marketing email, "
            "whose send reaches only marketing, subscribed, unbounced contacts."
        )
    if type not in CommunicationType.values:
        raise SendRefused(
            f"Unknown communication type {type!r}; use one of {', '.join(CommunicationType.values)}."
        )
    try:
        with transaction.atomic():
            log = Communication.objects.create(
                contact_id=contact.pk,
                type=type,
                subject=subject[:200],
                to_address=contact.email,
                status=EmailSendStatus.CLAIMED,
                at=timezone.now(),
                actor=actor if getattr(actor, "pk", None) else None,
                idempotency_key=idempotency_key,
            )
    except IntegrityError:
        existing = Communication.objects.filter(idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        existing.replayed = True
        return existing
    try:
        EmailMessage(
            subject=subject, body=body, from_email=from_email or None, to=[contact.email]
        ).send()
    except Exception as error:
        log.status, log.error = (
            EmailSendStatus.FAILED,
            f"{error.__class__.__name__}: {error}"[:1000],
        )
    else:
        log.status = EmailSendStatus.SENT
    log.at = timezone.now()
    log.save(update_fields=["status", "error", "at"])
    log.replayed = False
    return log


# --- engagement events: bulk ingestion (issue 5, item 7) ------------------------------
#
# `engagement_events_ingest` is the one way events are stored: the engagement API, and
# intake's form submissions, chats and ads leads (through `engagement_record`). It is
# set-based — one query resolves the batch's contacts, one INSERT … ON CONFLICT
# (external_id) DO NOTHING RETURNING stores the new events (PostgreSQL; elsewhere a
# lookup of the known external ids and `bulk_create`), one UPDATE … FROM moves
# `last_engaged_at` forward — and idempotent by external id: a retried batch, or the same
# external id twice in one batch, is reported "duplicate" and stored once. Scores are not
# this app's business (workflows owns scoring rules): the caller scores the events it gets
# back, or, with `notify=True`, contacts' after-commit engagement listeners do.

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


@dataclass
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
    scored: int = 0  # contacts whose lead score the caller's scorer moved

    def by_contact(self) -> dict[int, list[NewEngagementEvent]]:
        grouped: dict[int, list[NewEngagementEvent]] = {}
        for event in self.new_events:
            grouped.setdefault(event.contact_id, []).append(event)
        return grouped


def _engagement_datetime(value) -> tuple[dt.datetime | None, str | None]:
    """An aware datetime from a datetime or an ISO 8601 string (no offset: UTC)."""
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
    if parsed.tzinfo is None:  # (timezone.is_naive calls utcoffset(): 3 µs an event)
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed, None


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
    from contacts.models import EngagementEvent

    table = EngagementEvent._meta.db_table
    if connection.vendor == "postgresql":
        with server_bound_cursor() as cursor:
            cursor.execute(
                f"""
                INSERT INTO {table} (contact_id, type, occurred_at, external_id, properties,
                                     created_at)
                SELECT u.contact_id, u.type, u.occurred_at, u.external_id, u.properties::jsonb, %b
                FROM unnest(%b::bigint[], %b::text[], %b::timestamptz[], %b::text[], %b::text[])
                     AS u(contact_id, type, occurred_at, external_id, properties)
                ON CONFLICT (external_id) DO NOTHING
                RETURNING external_id
                """,
                [
                    now,
                    [row[0] for row in rows],
                    [row[1] for row in rows],
                    [row[2] for row in rows],
                    [row[3] for row in rows],
                    [json.dumps(row[4]) for row in rows],
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
    GREATEST(last_engaged_at, newest event)` (it only moves forward) and, when a scorer
    gave `points`, `lead_score = lead_score + points`. Returns the contacts written."""
    from crm.sql import update_from_rows

    points = points or {}
    newest: dict[int, dt.datetime] = {}
    for event in events:
        if event.contact_id not in newest or newest[event.contact_id] < event.occurred_at:
            newest[event.contact_id] = event.occurred_at
    moved = "t.last_engaged_at IS NULL OR t.last_engaged_at < u.at"
    return update_from_rows(
        table=Contact._meta.db_table,
        columns=[("id", "bigint"), ("at", "timestamptz"), ("points", "integer")],
        rows=[(pk, at, points.get(pk, 0)) for pk, at in sorted(newest.items())],
        # GREATEST ignores NULL on PostgreSQL but not on SQLite, hence the CASE; the WHERE
        # skips the rows that would not change (no write, no index churn).
        set_sql=f"last_engaged_at = CASE WHEN {moved} THEN u.at ELSE t.last_engaged_at END, "
        "lead_score = t.lead_score + u.points",
        where_sql=f"{moved} OR u.points <> 0",
    )


EngagementScorer = Callable[..., dict[int, int]]


def engagement_events_ingest(
    *,
    items: list,
    now: dt.datetime | None = None,
    external_id_required: bool = True,
    notify: bool = True,
    score: EngagementScorer | None = None,
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
    `notify=False` and `score=workflows.services.scores_event_points`: called as
    `score(events=…, now=…)`, it answers each contact's points, which are added in the
    same UPDATE that moves `last_engaged_at` — one write per contact instead of two, in
    the batch's transaction. `scored` then counts the contacts whose score moved.
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
                points = score(events=new_events, now=now) if score and new_events else {}
                engagement_contacts_update(events=new_events, points=points)
            break
        except IntegrityError:  # portable path: a concurrent writer stored one of our ids
            if attempt == 2:
                raise
    new_indexes = {row[5] for row in new_rows}
    batch = EngagementIngestResult(
        items=results, new_events=new_events, scored=sum(1 for p in points.values() if p)
    )
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


# --- workflows: set a property (issue 5, item 4) ---

# The properties a workflow action may set: plain CRM fields, never the status.
SETTABLE_PROPERTIES = {
    "lifecycle_stage": frozenset(LifecycleStage.values),
    "lead_status": frozenset({"", *LeadStatus.values}),
}


@dataclass
class PropertyChange:
    field: str
    value: str
    matched: int = 0
    changed: int = 0


def contacts_set_property(
    *, contacts: Target, field: str, value: str, at: dt.datetime | None = None
) -> PropertyChange:
    """Set the lifecycle stage or the lead status of a set of contacts, set-based.

    One UPDATE per id-range chunk, touching only the rows whose value differs (so a
    rerun changes nothing). Other fields — and the marketing status above all — are
    refused. It does not notify the contact listeners: a workflow's own writes do not
    trigger event workflows (no cascades or loops); the schedule picks them up.
    """
    if field not in SETTABLE_PROPERTIES:
        raise StatusError(
            f"Only {' and '.join(sorted(SETTABLE_PROPERTIES))} can be set this way, not {field!r}."
        )
    if value not in SETTABLE_PROPERTIES[field]:
        raise StatusError(f"{value!r} is not a valid {field.replace('_', ' ')}.")
    now = at or timezone.now()
    change = PropertyChange(field=field, value=value)
    with transaction.atomic():
        for chunk in _chunks(_as_queryset_or_ids(contacts)):
            change.matched += chunk.queryset.order_by().count()
            change.changed += (
                Contact.objects.filter(pk__in=chunk.queryset.order_by().values("pk"))
                .exclude(**{field: value})
                .update(**{field: value, "updated_at": now})
            )
    return change
