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

import datetime as dt
import hashlib
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import Count, F, Max, Min, Q, QuerySet
from django.db.models.functions import Greatest
from django.utils import timezone

from contacts.hooks import (
    GuardRequest,
    UsageChange,
    check_guards,
    notify_usage_changed,
    preview_extras,
)
from contacts.models import (
    Contact,
    LedgerAction,
    LedgerStatus,
    MarketingStatus,
    PeriodUsage,
    Source,
    StatusChange,
    StatusChangeRequest,
    StatusSourceType,
    UsageState,
    normalise_email,
)
from crm.calendar import BillingCalendar

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
            assignments=_sql(
                f"marketing_status = '{_N}', marketing_until = NULL, updated_at = {{now}}",
                now=_p(timezone.now()),
            ),
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


def contacts_status_preview(
    *, contacts: Target, operation: str, at: dt.datetime | None = None
) -> StatusPreview:
    """Counts of what a set-marketing or set-non-marketing would do; nothing is written."""
    if operation not in (SET_MARKETING, SET_NON_MARKETING):
        raise StatusError(
            f"Unknown operation {operation!r}; use set_marketing or set_non_marketing."
        )
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
    if operation == SET_NON_MARKETING and preview.would_schedule:
        preview.effective_from = usage.period_end
    preview.live_after = preview.live_count + preview.would_change
    preview.peak_after = max(preview.peak_count, preview.live_after)
    preview.extra = preview_extras(preview)
    return preview


# --- contacts ------------------------------------------------------------------


def source_default_status(source: Source) -> bool:
    return False if source.locked else source.default_marketing


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
    """Create a contact; its status is the source's default unless `marketing` says otherwise.

    A locked source can never create a marketing contact. Whether the caller may
    choose `marketing` (the permission) is checked by the interface.
    """
    if marketing and source.locked:
        raise LockedSourceError(
            f"The source {source.name!r} ({source.get_kind_display()}) is locked: "
            "its contacts are always non-marketing."
        )
    make_marketing = source_default_status(source) if marketing is None else marketing
    with transaction.atomic():
        contact = Contact(email=normalise_email(email), source=source, **fields)
        contact.full_clean(exclude=["source"])
        _save_unique_email(contact)
        if make_marketing:
            contacts_set_marketing(
                contacts=contact,
                source=status_source
                or StatusSource(StatusSourceType.CREATION, id=str(source.pk), name=source.name),
                actor=actor,
                idempotency_key=idempotency_key,
            )
            contact.refresh_from_db()
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
        transaction.on_commit(lambda: send_marketing_email.delay(email_id))
    email.refresh_from_db()
    return SendOutcome(email_id=email.pk, status=email.status, breakdown=breakdown)


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
