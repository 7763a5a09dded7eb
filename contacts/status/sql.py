"""The set-based SQL of the status service: one statement a chunk on PostgreSQL, three elsewhere.

Each operation (set marketing, set non-marketing, delete, rollover) is described once as
SQL fragments over a chunk's old status `s` and pending date `u`; the runners below turn
that into UPDATE … RETURNING feeding INSERT … SELECT into the ledger (PostgreSQL) or a
COUNT, an INSERT … SELECT and an UPDATE (elsewhere). No contact is loaded into Python.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass

from django.core.exceptions import EmptyResultSet
from django.db import connection
from django.db.models import BooleanField, F, Max, Min, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import Greatest
from django.utils import timezone

from contacts.models import (
    Contact,
)
from contacts.status.models import (
    LedgerAction,
    LedgerStatus,
    PeriodUsage,
    StatusChange,
    StatusChangeRequest,
    UsageState,
)
from contacts.status.results import ROLLOVER, SET_MARKETING, SET_NON_MARKETING, StatusSource, Target
from contacts.status.rules import MARKETING, NON_MARKETING, marketing_sql, pending_sql

# Ids per statement when the caller hands over a list (well under SQLite's variable limit).
STATUS_ID_BATCH = 5_000

# Width of the id range a statement covers when the caller hands over a queryset.
STATUS_RANGE_BATCH = 50_000

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def sql_fill(template: str, **fragments: tuple[str, list]) -> tuple[str, list]:
    """Fill {name} slots with (sql, params) fragments, keeping params in slot order."""
    params: list = []

    def fill(match: re.Match) -> str:
        text, fragment_params = fragments[match.group(1)]
        params.extend(fragment_params)
        return text

    return _PLACEHOLDER.sub(fill, template), params


def sql_param(value) -> tuple[str, list]:
    """One parameter as a fragment; datetimes adapted the way the ORM stores them."""
    if isinstance(value, dt.datetime):
        value = connection.ops.adapt_datetimefield_value(value)
    return "%s", [value]


CONTACT_TABLE = Contact._meta.db_table
LEDGER_TABLE = StatusChange._meta.db_table
LEDGER_COLUMNS = (
    "contact_id, request_id, action, from_status, to_status, requested_at, effective_at, "
    "delta, source_type, source_id, source_name, actor_id"
)


@dataclass(frozen=True)
class OperationSql:
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
    # Set marketing: "marketing at the change's instant" over the table's own columns.
    # Only those rows (no change, or a pending downgrade to cancel, whose ledger row
    # needs its date) are read first; every other row matched becomes an upgrade, which
    # needs nothing of its old values, so the PostgreSQL path updates those straight
    # from the target's filter.
    marketing_now: tuple[str, list] | None = None


def operation_sql(
    op: str, *, now: dt.datetime, until: dt.datetime | None, source: StatusSource
) -> OperationSql:
    reason = sql_fill(
        "marketing_reason_type = {t}, marketing_reason_id = {i}, marketing_reason_name = {n}, "
        "marketing_changed_at = {now}, updated_at = {now}",
        t=sql_param(source.type),
        i=sql_param(source.id),
        n=sql_param(source.name[:200]),
        now=sql_param(now),
    )
    pending = (pending_sql(status="s", until="u"), sql_param(now)[1])
    if op == SET_MARKETING:
        return OperationSql(
            needs_change=(f"(s <> '{MARKETING}' OR u IS NOT NULL)", []),
            action=sql_fill(
                f"CASE WHEN {{pending}} THEN '{LedgerAction.DOWNGRADE_CANCELLED.value}' "
                f"ELSE '{LedgerAction.UPGRADE.value}' END",
                pending=pending,
            ),
            from_status=(f"'{NON_MARKETING}'", []),
            to_status=(f"'{MARKETING}'", []),
            effective_at=sql_fill(
                "CASE WHEN {pending} THEN u ELSE {now} END", pending=pending, now=sql_param(now)
            ),
            delta=("1", []),
            assignments=sql_fill(
                f"marketing_status = '{MARKETING}', marketing_until = NULL, {{reason}}",
                reason=reason,
            ),
            marketing_now=(marketing_sql(), sql_param(now)[1]),
        )
    if op == SET_NON_MARKETING:
        return OperationSql(
            needs_change=(f"(s = '{MARKETING}' AND u IS NULL)", []),
            action=(f"'{LedgerAction.DOWNGRADE_SCHEDULED.value}'", []),
            from_status=(f"'{MARKETING}'", []),
            to_status=(f"'{NON_MARKETING}'", []),
            effective_at=sql_param(until),
            delta=("-1", []),
            assignments=sql_fill(
                "marketing_until = {until}, {reason}", until=sql_param(until), reason=reason
            ),
        )
    if op == ROLLOVER:
        return OperationSql(
            needs_change=sql_fill(f"(s = '{MARKETING}' AND u <= {{asof}})", asof=sql_param(now)),
            action=(f"'{LedgerAction.ROLLOVER.value}'", []),
            from_status=(f"'{MARKETING}'", []),
            to_status=(f"'{NON_MARKETING}'", []),
            effective_at=("u", []),
            delta=("0", []),
            # marketing_until stays as "non-marketing since": it is indexed, and leaving
            # every indexed column alone lets PostgreSQL update the rows in place (HOT).
            assignments=sql_fill(
                f"marketing_status = '{NON_MARKETING}', updated_at = {{now}}",
                now=sql_param(timezone.now()),
            ),
            in_place=True,
        )
    raise ValueError(op)


# Deleting writes two kinds of rows: a pending downgrade is cancelled (+1 at its date) and the
# billable contact leaves (-1 now), so a replay never counts the contact twice or not at all.
def delete_rows(now: dt.datetime) -> list[OperationSql]:
    return [
        OperationSql(
            needs_change=(pending_sql(status="s", until="u"), sql_param(now)[1]),
            action=(f"'{LedgerAction.DOWNGRADE_CANCELLED.value}'", []),
            from_status=(f"'{NON_MARKETING}'", []),
            to_status=(f"'{LedgerStatus.NONE.value}'", []),
            effective_at=("u", []),
            delta=("1", []),
            assignments=("", []),
        ),
        OperationSql(
            needs_change=(marketing_sql(status="s", until="u"), sql_param(now)[1]),
            action=(f"'{LedgerAction.DELETED.value}'", []),
            from_status=(f"'{MARKETING}'", []),
            to_status=(f"'{LedgerStatus.NONE.value}'", []),
            effective_at=sql_param(now),
            delta=("-1", []),
            assignments=("", []),
        ),
    ]


def ledger_select(
    spec: OperationSql, *, request_id: int, now, source: StatusSource, actor_id
) -> tuple[str, list]:
    return sql_fill(
        "SELECT id, {req}, {action}, {from_status}, {to_status}, {now}, {effective_at}, {delta}, "
        "{st}, {si}, {sn}, {actor}",
        req=sql_param(request_id),
        action=spec.action,
        from_status=spec.from_status,
        to_status=spec.to_status,
        now=sql_param(now),
        effective_at=spec.effective_at,
        delta=spec.delta,
        st=sql_param(source.type),
        si=sql_param(source.id),
        sn=sql_param(source.name[:200]),
        actor=sql_param(actor_id),
    )


def chunk_sql(chunk: QuerySet) -> tuple[str, list]:
    sql, params = chunk.order_by().values("pk").query.sql_with_params()
    return sql, list(params)


def upgrades_in_place(target: QuerySet | list[int], spec: OperationSql) -> bool:
    """Whether the PostgreSQL path sets `target` marketing in place
    (`run_chunk_upgrade_in_place`): a set-marketing of a filter on the contacts table's
    own columns."""
    return spec.marketing_now is not None and isinstance(target, QuerySet) and _single_table(target)


def run_chunk_postgresql(
    chunk: Chunk, spec: OperationSql, ledger_select, *, counted: bool = False
) -> dict[str, int]:
    """One statement: read the chunk's rows, UPDATE … RETURNING into INSERT … SELECT.

    `target` is the chunk's own query (no self-join of contacts), and the UPDATE is
    bounded to the chunk's id range, so the planner walks the primary key instead of
    hashing the whole table. `counted`: the caller counted the target's rows
    (`target_chunks_counted`), so an upgrade in place need not count the chunk's.
    """
    if spec.in_place:
        return run_chunk_in_place(chunk, spec, ledger_select)
    if upgrades_in_place(chunk.queryset, spec):
        return run_chunk_upgrade_in_place(chunk, spec, ledger_select, counted=counted)
    rows = chunk.queryset.order_by().values_list("pk", "marketing_status", "marketing_until")
    rows_sql, rows_params = rows.query.sql_with_params()
    sql, params = sql_fill(
        f"""
        WITH target AS MATERIALIZED (
            SELECT id, s, u FROM ({{rows}}) AS t0 (id, s, u)
        ),
        upd AS (
            UPDATE {CONTACT_TABLE} c SET {{assignments}}
            FROM target t
            WHERE c.id = t.id AND c.id >= {{lo}} AND c.id < {{hi}} AND {{needs}}
            RETURNING c.id, t.s, t.u
        ),
        ins AS (
            INSERT INTO {LEDGER_TABLE} ({LEDGER_COLUMNS})
            {{ledger}} FROM upd
            RETURNING action
        )
        SELECT 'matched', COUNT(*) FROM target
        UNION ALL SELECT action, COUNT(*) FROM ins GROUP BY action
        """,
        rows=(rows_sql, list(rows_params)),
        assignments=spec.assignments,
        lo=sql_param(chunk.lo),
        hi=sql_param(chunk.hi),
        needs=spec.needs_change,  # s and u are target's columns: the contacts table has neither
        ledger=ledger_select,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {action: count for action, count in cursor.fetchall()}


def run_chunk_in_place(chunk: Chunk, spec: OperationSql, ledger_select) -> dict[str, int]:
    """UPDATE … WHERE <the chunk's own filter> RETURNING into INSERT … SELECT.

    About a quarter cheaper than reading the rows first: no join back to the table.
    Only for a filter on the contacts table's own columns (no joins).
    """
    if not _single_table(chunk.queryset):
        raise ValueError("an in-place chunk filters on the contacts table alone")
    sql, params = sql_fill(
        f"""
        WITH upd AS (
            UPDATE {CONTACT_TABLE} SET {{assignments}}
            WHERE {{where}}
            RETURNING id, marketing_until AS u
        ),
        ins AS (
            INSERT INTO {LEDGER_TABLE} ({LEDGER_COLUMNS})
            {{ledger}} FROM upd
            RETURNING action
        )
        SELECT 'matched', COUNT(*) FROM ins
        UNION ALL SELECT action, COUNT(*) FROM ins GROUP BY action
        """,
        assignments=spec.assignments,
        where=_where(chunk.queryset),
        ledger=ledger_select,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {action: count for action, count in cursor.fetchall()}


def run_chunk_upgrade_in_place(
    chunk: Chunk, spec: OperationSql, ledger_select, *, counted: bool
) -> dict[str, int]:
    """Set marketing in one statement of two UPDATEs over disjoint rows: the chunk's rows
    marketing now are read first (`kept`) and those with a pending downgrade updated
    through that list (their ledger row is effective at the old date); every other row of
    the chunk's filter is updated in place as an upgrade. The ledger select reads (s, u)
    from both: an upgrade's are a non-marketing status and no date, which give its action
    and its effective instant. Matched = kept + upgraded.

    When the caller counted the target's rows (`counted`), `kept` is only the rows with a
    pending downgrade, along contact_pending_idx: the rows marketing already are not read
    at all. Reading them was a second pass over the chunk's filter, about a tenth of a
    change of every tenth contact; then matched is the caller's count."""
    where = _where(chunk.queryset)
    pending_only = "AND marketing_until IS NOT NULL" if counted else ""
    sql, params = sql_fill(
        f"""
        WITH kept AS MATERIALIZED (
            SELECT id, marketing_status AS s, marketing_until AS u FROM {CONTACT_TABLE}
            WHERE {{where}} AND {{marketing}} {pending_only}
        ),
        cancelled AS (
            UPDATE {CONTACT_TABLE} c SET {{assignments}}
            FROM kept k
            WHERE c.id = k.id AND k.u IS NOT NULL
            RETURNING c.id, k.s, k.u
        ),
        upgraded AS (
            UPDATE {CONTACT_TABLE} SET {{assignments}}
            WHERE {{where}} AND NOT {{marketing}}
            RETURNING id, '{NON_MARKETING}'::varchar AS s, NULL::timestamptz AS u
        ),
        upd AS (
            SELECT id, s, u FROM cancelled UNION ALL SELECT id, s, u FROM upgraded
        ),
        ins AS (
            INSERT INTO {LEDGER_TABLE} ({LEDGER_COLUMNS})
            {{ledger}} FROM upd
            RETURNING action
        )
        SELECT 'matched', (SELECT COUNT(*) FROM kept) + (SELECT COUNT(*) FROM upgraded)
        UNION ALL SELECT action, COUNT(*) FROM ins GROUP BY action
        """,
        where=where,
        marketing=spec.marketing_now,
        assignments=spec.assignments,
        ledger=ledger_select,
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {action: count for action, count in cursor.fetchall()}


def _single_table(queryset: QuerySet) -> bool:
    """Whether the queryset filters on the contacts table's own columns (no joins)."""
    return len(queryset.query.alias_map) <= 1


def _where(queryset: QuerySet) -> tuple[str, list]:
    query = queryset.order_by().query
    where, params = query.get_compiler(connection=connection).compile(query.where)
    return where, list(params)


def run_chunk_portable(
    chunk: QuerySet, specs: list[OperationSql], ledger_selects, *, update: bool
) -> int:
    """Count, then INSERT … SELECT the ledger rows, then UPDATE: a fixed three statements."""
    source_rows = sql_fill(
        f"(SELECT id, marketing_status AS s, marketing_until AS u FROM {CONTACT_TABLE} WHERE id IN ({{chunk}})) t",
        chunk=chunk_sql(chunk),
    )
    with connection.cursor() as cursor:
        sql, params = sql_fill("SELECT COUNT(*) FROM {rows}", rows=source_rows)
        cursor.execute(sql, params)
        matched = cursor.fetchone()[0]
        for spec, ledger_select in zip(specs, ledger_selects, strict=True):
            sql, params = sql_fill(
                f"INSERT INTO {LEDGER_TABLE} ({LEDGER_COLUMNS}) {{ledger}} FROM {{rows}} WHERE {{needs}}",
                ledger=ledger_select,
                rows=source_rows,
                needs=spec.needs_change,
            )
            cursor.execute(sql, params)
        if update:
            spec = specs[0]
            sql, params = sql_fill(
                f"UPDATE {CONTACT_TABLE} SET {{assignments}} WHERE id IN "
                f"(SELECT id FROM {{rows}} WHERE {{needs}})",
                assignments=spec.assignments,
                rows=source_rows,
                needs=spec.needs_change,
            )
            cursor.execute(sql, params)
    return matched


def finish_writes(
    *,
    usage_id: int,
    live_delta: int,
    scheduled_delta: int,
    state_id: int,
    last_change_at: dt.datetime,
    request_id: int,
    result: dict,
) -> None:
    """A change's last writes, with the usage lock held: the period's counters (when they
    move; F()/GREATEST, O(1)), the change clock and the request's stored result.

    One statement on PostgreSQL (data-modifying CTEs), so the lock is held for one round
    trip here instead of three; the ORM's three updates elsewhere.
    """
    moved = bool(live_delta or scheduled_delta)
    if not use_postgresql_fast_path():
        if moved:
            PeriodUsage.objects.filter(pk=usage_id).update(
                live_count=F("live_count") + live_delta,
                peak_count=Greatest(F("peak_count"), F("live_count") + live_delta),
                scheduled_downgrades=F("scheduled_downgrades") + scheduled_delta,
            )
        UsageState.objects.filter(pk=state_id).update(last_change_at=last_change_at)
        StatusChangeRequest.objects.filter(pk=request_id).update(result=result)
        return
    counters = (
        f"counters AS (UPDATE {PeriodUsage._meta.db_table} SET live_count = live_count + "
        "{live}, peak_count = GREATEST(peak_count, live_count + {live}), "
        "scheduled_downgrades = scheduled_downgrades + {scheduled} WHERE id = {usage}), "
    )
    sql, params = sql_fill(
        "WITH "
        + (counters if moved else "")
        + f"clock AS (UPDATE {UsageState._meta.db_table} SET last_change_at = {{at}} "
        "WHERE id = {state}) "
        f"UPDATE {StatusChangeRequest._meta.db_table} SET result = {{result}}::jsonb "
        "WHERE id = {request}",
        live=sql_param(live_delta),
        scheduled=sql_param(scheduled_delta),
        usage=sql_param(usage_id),
        at=sql_param(last_change_at),
        state=sql_param(state_id),
        result=sql_param(json.dumps(result)),
        request=sql_param(request_id),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def use_postgresql_fast_path() -> bool:
    return connection.vendor == "postgresql" and not FORCE_PORTABLE


FORCE_PORTABLE = False  # tests flip it to run the portable path on PostgreSQL too


def as_target(contacts: Target) -> QuerySet | list[int]:
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
class Chunk:
    """The contacts of one statement: a queryset whose ids all lie in [lo, hi), or, for a
    chunk cut along another index (`pending_chunks`: in-place statements only), anywhere."""

    queryset: QuerySet
    lo: int | None
    hi: int | None


def target_chunks(
    target: QuerySet | list[int], *, within: tuple[int, int] | None = None
) -> list[Chunk]:
    """The statements' chunks: id lists of STATUS_ID_BATCH, or id ranges of
    STATUS_RANGE_BATCH from the queryset's MIN to its MAX id (or across `within`, the
    caller's [lo, hi), without reading them)."""
    if isinstance(target, list):
        return [
            Chunk(Contact.objects.filter(pk__in=batch), batch[0], batch[-1] + 1)
            for batch in (
                target[i : i + STATUS_ID_BATCH] for i in range(0, len(target), STATUS_ID_BATCH)
            )
        ]
    if within is not None:
        chunks = []
        for lo in range(within[0], within[1], STATUS_RANGE_BATCH):
            hi = min(lo + STATUS_RANGE_BATCH, within[1])
            chunks.append(Chunk(target.filter(pk__gte=lo, pk__lt=hi), lo, hi))
        return chunks
    bounds = target.order_by().aggregate(lo=Min("pk"), hi=Max("pk"))
    if bounds["lo"] is None:
        return []
    return [
        Chunk(
            target.filter(pk__gte=lo, pk__lt=lo + STATUS_RANGE_BATCH), lo, lo + STATUS_RANGE_BATCH
        )
        for lo in range(bounds["lo"], bounds["hi"] + 1, STATUS_RANGE_BATCH)
    ]


def target_chunks_counted(target: QuerySet) -> tuple[list[Chunk], int]:
    """`target_chunks` of a queryset, and its number of rows.

    Two statements: MIN and MAX walk the primary key from each end, and a count alone
    can be answered from the filter's index (an index-only scan: 8 ms for a lifecycle
    stage's 100,000 contacts of 1,000,000), where the three together read every row
    (150–200 ms)."""
    chunks = target_chunks(target)
    return chunks, (target.order_by().count() if chunks else 0)


def pending_chunks(
    due: QuerySet, *, after: dt.datetime | None, through: dt.datetime
) -> list[Chunk]:
    """The rollover's due contacts (`due`: marketing, `marketing_until` in (after, through])
    in chunks of STATUS_ID_BATCH entries of contact_pending_idx (marketing_until, id),
    each chunk a stretch of that index between two (date, id) bounds. PostgreSQL only.

    The index orders by date first: an id range would make each chunk's statement read
    the whole due stretch of the index and keep the ids in its range, so a rollover of n
    downgrades would read n² / STATUS_RANGE_BATCH index entries (a tenth of 10,000,000
    contacts: 200 chunks reading 1,000,000 entries each). The bounds come from one
    index-only pass over that stretch.

    A chunk must also stop at its upper bound. A row comparison starts the scan, but only
    its first column can stop it: `(marketing_until, id) < (D, n)` lets a scan run on
    through every later entry of date D. Every downgrade is due at a period start, so a
    rollover's entries mostly share one date, and each chunk read the rest of the stretch
    (at 10,000,000 contacts the first chunk 1,000,000 entries, 24 ms of its 85).
    Between two bounds of one date the chunk is that date and an id range, which the
    index starts and stops on; a chunk across dates adds its end's date as a plain bound.
    """
    after_sql, after_params = ("AND marketing_until > %s", [after]) if after else ("", [])
    with connection.cursor() as cursor:
        # contact_pending_idx, read in its own order.
        cursor.execute(
            f"""
            SELECT marketing_until, id FROM (
                SELECT marketing_until, id,
                       ROW_NUMBER() OVER (ORDER BY marketing_until, id) AS n
                FROM {CONTACT_TABLE}
                WHERE marketing_until IS NOT NULL AND marketing_until <= %s {after_sql}
            ) AS entries
            WHERE n %% %s = 1
            ORDER BY marketing_until, id
            """,
            [through, *after_params, STATUS_ID_BATCH],
        )
        bounds = cursor.fetchall()
    chunks = []
    for k, bound in enumerate(bounds):
        end = bounds[k + 1] if k + 1 < len(bounds) else None
        if end is not None and end[0] == bound[0]:
            chunk = due.filter(marketing_until=bound[0], pk__gte=bound[1], pk__lt=end[1])
        else:
            # Row comparisons, which PostgreSQL reads as the index's range; the last
            # chunk stops where the due stretch does.
            chunk = due.filter(_pending_entry(">=", bound))
            if end is not None:
                chunk = chunk.filter(_pending_entry("<", end), marketing_until__lte=end[0])
        chunks.append(Chunk(chunk, None, None))
    return chunks


def _pending_entry(op: str, bound: tuple[dt.datetime, int]) -> RawSQL:
    return RawSQL(f"(marketing_until, id) {op} (%s, %s)", bound, output_field=BooleanField())


def request_fingerprint(
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
