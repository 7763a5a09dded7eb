"""What the benchmark times: the status service, the same work as hand-written SQL, and
per-contact loops. Each function does the work and returns seconds of wall time, commit
included.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.db.models.functions import Greatest
from django.utils import timezone

from contacts.models import (
    Contact,
    MarketingStatus,
    StatusSourceType,
)
from contacts.status.models import (
    LedgerAction,
    PeriodUsage,
    StatusChange,
    StatusChangeRequest,
)
from contacts.status.results import StatusSource
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from crm.calendar import BillingCalendar
from tests.perf.data import CONTACT, LEDGER, REQUEST, STATE, USAGE

BULK = StatusSource(StatusSourceType.BULK_ACTION)


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def service_bulk(contacts: QuerySet) -> float:
    return timed(lambda: contacts_set_marketing(contacts=contacts, source=BULK))


# The same work as the service's bulk set-marketing, written by hand for PostgreSQL: the
# usage lock, the request row, the period's counter row, then one statement that updates
# the contacts, writes their ledger rows and moves the counters. In the benchmark's state
# no contact has a pending downgrade, so every ledger row is an upgrade.
_HANDWRITTEN = f"""
WITH upd AS (
    UPDATE {CONTACT}
    SET marketing_status = 'marketing', marketing_until = NULL,
        marketing_reason_type = %(type)s, marketing_reason_id = '', marketing_reason_name = '',
        marketing_changed_at = %(now)s, updated_at = %(now)s
    WHERE {{where}} AND (marketing_status <> 'marketing' OR marketing_until IS NOT NULL)
    RETURNING id
),
ins AS (
    INSERT INTO {LEDGER} (
        contact_id, request_id, action, from_status, to_status, requested_at, effective_at,
        delta, source_type, source_id, source_name, actor_id
    )
    SELECT id, %(request)s, 'upgrade', 'non_marketing', 'marketing', %(now)s, %(now)s,
           1, %(type)s, '', '', NULL
    FROM upd
    RETURNING 1
)
UPDATE {USAGE}
SET live_count = live_count + n.n, peak_count = GREATEST(peak_count, live_count + n.n),
    updated_at = %(now)s
FROM (SELECT COUNT(*) AS n FROM ins) AS n
WHERE period_start = %(start)s
"""


def handwritten_prelude(operation: str = "set_marketing") -> tuple[list[str], dict]:
    """The hand-written contender's first statements, the same on PostgreSQL and SQLite: the
    usage lock, the period's counter row, the request row (the last returns its id); and
    their parameters, datetimes as the ORM stores them (naive UTC text on SQLite)."""
    now = timezone.now()
    start, end = BillingCalendar.for_account().period_bounds(now)
    adapt = connection.ops.adapt_datetimefield_value
    params = {"now": adapt(now), "start": adapt(start), "end": adapt(end), "type": BULK.type}
    return [
        # The usage lock, taken (and the change clock moved) in one statement.
        f"INSERT INTO {STATE} (id, last_change_at) VALUES (1, %(now)s) "
        "ON CONFLICT (id) DO UPDATE SET last_change_at = EXCLUDED.last_change_at",
        f"INSERT INTO {USAGE} (period_start, period_end, opening_count, live_count, "
        "peak_count, scheduled_downgrades, updated_at) "
        "VALUES (%(start)s, %(end)s, 0, 0, 0, 0, %(now)s) ON CONFLICT (period_start) DO NOTHING",
        f"INSERT INTO {REQUEST} (idempotency_key, operation, fingerprint, source_type, "
        "source_id, source_name, actor_id, requested_at, result) "
        f"VALUES ('bench:{uuid.uuid4()}', '{operation}', '', %(type)s, '', '', NULL, "
        "%(now)s, '{}') RETURNING id",
    ], params


def handwritten_statements(where: str) -> list[tuple[str, dict]]:
    """The statements of the hand-written contender, in order, with their parameters."""
    prelude, params = handwritten_prelude()
    return [*((sql, params) for sql in prelude), (_HANDWRITTEN.format(where=where), params)]


def handwritten_bulk(where: str) -> float:
    def work():
        with transaction.atomic(), connection.cursor() as cursor:
            statements = handwritten_statements(where)
            for sql, params in statements[:-1]:
                cursor.execute(sql, params)
            request_id = cursor.fetchone()[0]
            sql, params = statements[-1]
            cursor.execute(sql, {**params, "request": request_id})

    return timed(work)


def service_loop(ids: list[int]) -> float:
    """The service called once per contact, as a naive interface would."""

    def work():
        for pk in ids:
            contacts_set_marketing(contacts=pk, source=BULK)

    return timed(work)


def naive_orm_loop(ids: list[int]) -> float:
    """The obvious per-row Django code: load, save(), a ledger row and a counter update per
    contact, each in its own transaction. A baseline only: the product changes the status
    through the service alone."""
    now = timezone.now()
    start, end = BillingCalendar.for_account().period_bounds(now)
    usage, _ = PeriodUsage.objects.get_or_create(period_start=start, defaults={"period_end": end})
    request = StatusChangeRequest.objects.create(
        idempotency_key=f"bench:{uuid.uuid4()}",
        operation="set_marketing",
        source_type=BULK.type,
        requested_at=now,
    )

    def work():
        for pk in ids:
            with transaction.atomic():
                contact = Contact.objects.select_for_update().get(pk=pk)
                at = timezone.now()
                contact.marketing_status = MarketingStatus.MARKETING
                contact.marketing_until = None
                contact.marketing_reason_type = BULK.type
                contact.marketing_changed_at = at
                contact.save()
                StatusChange.objects.create(
                    contact=contact,
                    request=request,
                    action=LedgerAction.UPGRADE,
                    from_status=MarketingStatus.NON_MARKETING,
                    to_status=MarketingStatus.MARKETING,
                    requested_at=at,
                    effective_at=at,
                    delta=1,
                    source_type=BULK.type,
                )
                PeriodUsage.objects.filter(pk=usage.pk).update(
                    live_count=F("live_count") + 1,
                    peak_count=Greatest(F("peak_count"), F("live_count") + 1),
                )

    return timed(work)


def single_changes(pk: int, calls: int, warmup: int = 20) -> list[float]:
    """Seconds of each of `calls` single-contact changes, alternating set marketing (an
    upgrade, then cancelling the pending downgrade) and set non-marketing (scheduling it)."""
    times = []
    for i in range(warmup + calls):
        change = contacts_set_marketing if i % 2 == 0 else contacts_set_non_marketing
        seconds = timed(lambda change=change: change(contacts=pk, source=BULK))
        if i >= warmup:
            times.append(seconds)
    return times


# --- plans ---------------------------------------------------------------------


class _Explained(Exception):
    pass


def explain_first(run: Callable[[], object], marker: str) -> str:
    """EXPLAIN ANALYZE of the first statement `run` executes that contains `marker`.

    Explaining runs the statement; then `run` is stopped and everything it did is
    rolled back.
    """
    plans: list[str] = []

    def wrapper(execute, sql, params, many, context):
        if marker in sql:
            raw = context["cursor"].cursor  # the driver's cursor: no wrappers, no recursion
            raw.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            plans.append("\n".join(row[0] for row in raw.fetchall()))
            raise _Explained
        return execute(sql, params, many, context)

    try:
        with transaction.atomic(), connection.execute_wrapper(wrapper):
            run()
            raise _Explained  # nothing matched: roll back all the same
    except _Explained:
        pass
    return plans[0] if plans else "(no statement matched)"


def explain_service_chunk(contacts: QuerySet) -> str:
    # The service's PostgreSQL chunk statement starts with this CTE.
    return explain_first(
        lambda: contacts_set_marketing(contacts=contacts, source=BULK), "WITH kept AS"
    )


def explain_handwritten(where: str) -> str:
    return explain_first(lambda: handwritten_bulk(where), "WITH upd AS")
