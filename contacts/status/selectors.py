"""Reads of the billable counters and the ledger: the usage now, a contact's history, the replay."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import QuerySet
from django.utils import timezone

from contacts.status.models import (
    PeriodUsage,
    StatusChange,
    UsageState,
)
from crm.calendar import BillingCalendar


@dataclass(frozen=True)
class UsageSnapshot:
    period_start: dt.datetime
    period_end: dt.datetime
    opening_count: int
    live_count: int
    peak_count: int
    pending_downgrades: int

    @property
    def next_update(self) -> dt.datetime:
        return self.period_end


def usage_current(*, at: dt.datetime | None = None) -> UsageSnapshot:
    """The live billable count and the running peak of the period containing `at`. O(1).

    When nothing has changed since the period began, its row does not exist yet:
    it is derived from the last period's row (live less its scheduled downgrades).
    """
    at = at or timezone.now()
    calendar = BillingCalendar.for_account()
    start, end = calendar.period_bounds(at)
    row = PeriodUsage.objects.filter(period_start__lte=at).order_by("-period_start").first()
    if row is not None and row.period_start == start:
        return UsageSnapshot(
            period_start=start,
            period_end=end,
            opening_count=row.opening_count,
            live_count=row.live_count,
            peak_count=row.peak_count,
            pending_downgrades=row.scheduled_downgrades,
        )
    opening = row.live_count - row.scheduled_downgrades if row is not None else 0
    return UsageSnapshot(
        period_start=start,
        period_end=end,
        opening_count=opening,
        live_count=opening,
        peak_count=opening,
        pending_downgrades=0,
    )


def status_clock(*, at: dt.datetime | None = None) -> dt.datetime:
    """`at` (default: now), or the instant of the last status change when that is later.

    Change instants only grow: a change asked for before the last one is stamped just
    after it (contacts.status.services). A check of the ledger "as of now" reads up to
    this instant, so no change it can see lies after its "now".
    """
    now = at or timezone.now()
    last = UsageState.objects.filter(pk=1).values_list("last_change_at", flat=True).first()
    return max(now, last) if last else now


def contact_status_history(*, contact_id: int) -> QuerySet[StatusChange]:
    """A contact's ledger rows, newest first, with those of the contacts merged into it
    (their rows stay attached to their own ids; contacts.merge records where they went)."""
    from contacts.merge.selectors import merged_ids_into

    ids = [contact_id, *merged_ids_into(survivor_id=contact_id)]
    # statuschange_contact_idx
    return (
        StatusChange.objects.filter(contact_id__in=ids)
        .select_related("actor", "request")
        .order_by("-id")
    )


@dataclass(frozen=True)
class LedgerReplay:
    """The billable counts of [start, end) recomputed from the ledger alone."""

    start: dt.datetime
    end: dt.datetime
    opening_count: int  # at the first instant, start
    peak_count: int  # the maximum at any instant of the period, start included
    closing_count: int  # just before end


def ledger_replay(*, start: dt.datetime, end: dt.datetime) -> LedgerReplay:
    """Replay the ledger: the billable count at every instant of [start, end).

    The opening count is the sum of `delta` up to and including `start`; inside the
    period, rows at one instant are summed before a running sum (a window function,
    on PostgreSQL and SQLite 3.25+), so a -1 and a +1 at the same instant never make
    a false peak. Only the period's own rows are windowed (statuschange_effective_idx).
    """
    from django.db import connection

    table = StatusChange._meta.db_table
    adapt = connection.ops.adapt_datetimefield_value
    # One pass over the period's rows gives both the highest running sum and the last
    # one (the period's net change: rows with delta 0 change nothing).
    sql = f"""
        SELECT
            (SELECT COALESCE(SUM(delta), 0) FROM {table} WHERE effective_at <= %s),
            running.highest, running.net
        FROM (
            SELECT MAX(c) AS highest, SUM(d) AS net FROM (
                SELECT d, SUM(d) OVER (ORDER BY effective_at ROWS UNBOUNDED PRECEDING) AS c
                FROM (
                    SELECT effective_at, SUM(delta) AS d FROM {table}
                    WHERE effective_at > %s AND effective_at < %s AND delta <> 0
                    GROUP BY effective_at
                ) AS per_instant
            ) AS rising
        ) AS running
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [adapt(start), adapt(start), adapt(end)])
        opening, highest_rise, period_sum = cursor.fetchone()
    opening = int(opening or 0)
    return LedgerReplay(
        start=start,
        end=end,
        opening_count=opening,
        peak_count=opening + max(0, int(highest_rise or 0)),
        closing_count=opening + int(period_sum or 0),
    )
