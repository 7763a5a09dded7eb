"""f. Closing a month: `billing_close_periods` with 1,000,000 contacts and 1,000,000+ ledger
rows (DESIGN §4: ≤ 5 s, bounded memory).

The state, written with plain SQL (not timed): the account calendar on the 1st, UTC; the
month closed is October 2026, at 2026-11-01 00:30 UTC. Every contact was upgraded once,
at its own instant spread through October (delta +1; a request per 1,000 contacts); every
10th contact (100,000) then scheduled a downgrade for 2026-11-01 00:00 (delta −1) and is
still marketing until then. October's counters: opening 0, live = peak = N, scheduled
N / 10; no November row yet. So the replay equals the counters and the close succeeds:
it applies 100,000 rollovers, opens November with 0.9 N and writes the invoice.

Between runs `reset_close()` undoes exactly what the close wrote (billing rows, the
rollover rows and their requests, November's counters, the contacts' status), then
VACUUM ANALYZE and CHECKPOINT. One untimed close (then the reset) comes before the timed
ones, as the export, reads and load sections warm up first: at 10,000,000 contacts the
set-up has just written about 20 GB, and the first closes after it read what the
operating system's cache no longer holds (docs/BENCHMARKS.md, "The 10M close, warm").

What a status change waits for during the close: one more close with another connection
making single status changes one after another all along (a marketing contact's
downgrade scheduled, then cancelled), each change's wait recorded; and, in the same run,
the same with the close holding the usage lock from start to end, as it did before the
rollover was cut into a transaction per chunk (the baseline).
"""

from __future__ import annotations

import datetime as dt
import resource
import threading
import time
import tracemalloc

from django.db import connection, transaction
from django.db.models import Count, Max

from billing.models import (
    Alert,
    BillingPeriod,
    DailyUsage,
    HourlyUpgrades,
    Invoice,
    InvoiceLine,
    Subscription,
)
from contacts.models import Contact
from tests.perf import data
from tests.perf.data import CONTACT, LEDGER, REQUEST, STATE, USAGE, execute

UTC = dt.UTC
START = dt.datetime(2026, 10, 1, tzinfo=UTC)  # the month closed
END = dt.datetime(2026, 11, 1, tzinfo=UTC)  # its end: the update date
AT = dt.datetime(2026, 11, 1, 0, 30, tzinfo=UTC)  # when the close runs
BAR_SECONDS = 5.0
SETUP_KEY = "bench:close-history"
# October's upgrades come in requests of this many contacts, as imports and bulk changes
# make them. With one request for the whole month the request table held a row or two,
# PostgreSQL checked each new ledger row's request by scanning that table (the cheapest
# plan for one page, kept for the session), and the table grows by a row a rollover
# chunk: 9.6 s of a 27 s rollover at 10,000,000 contacts was those checks, against 5.8 s
# through the primary key, as any real request table (a row per change) is read.
OCTOBER_REQUEST_CONTACTS = 1_000

BILLING_TABLES = [
    model._meta.db_table for model in (InvoiceLine, Invoice, BillingPeriod, Alert)
] + [model._meta.db_table for model in (DailyUsage, HourlyUpgrades)]


def _instant(g: str, count: int) -> str:
    """SQL for contact g's upgrade instant: distinct, spread over October, never on its start."""
    seconds = (END - START).total_seconds()
    return f"(%(start)s::timestamptz + ({g} * {seconds} / {count + 1}) * interval '1 second')"


def setup_close(count: int, history_months: int = 0) -> dict:
    """Contacts, ledger and counters of a consistent October (see the module's doc).

    `history_months` older months go before October in the ledger, 1.1 rows a contact
    each (as many as October's): 55 % of the contacts upgraded at their instant in the
    month and rolled over a second later (+1, −1). Each month sums to nothing, so the
    counters and the replay's opening (0) stay as they were; only the history grows."""
    bounds = Contact.objects.aggregate(n=Count("pk"), hi=Max("pk"))
    if (bounds["n"], bounds["hi"]) != (count, count):
        data.fill(count)
    params = {"start": START, "end": END}
    Subscription.load()
    execute(
        f"TRUNCATE {LEDGER}, {REQUEST}, {USAGE}, {STATE}, "
        + ", ".join(BILLING_TABLES)
        + " RESTART IDENTITY CASCADE"
    )
    upgraded = _instant("c.id", count)
    from contacts.demo.load import indexes_deferred

    with transaction.atomic(), indexes_deferred([LEDGER]), connection.cursor() as cursor:
        # October's requests, one per OCTOBER_REQUEST_CONTACTS contacts (keyed by the
        # group's number), then its ledger rows, each under its contact's group's request.
        cursor.execute(
            f"""
            INSERT INTO {REQUEST} (idempotency_key, operation, fingerprint, source_type,
                                   source_id, source_name, actor_id, requested_at, result)
            SELECT '{SETUP_KEY}:october:' || g, 'set_marketing', '', 'import', '',
                   'Benchmark history', NULL, %(start)s::timestamptz + interval '1 second',
                   '{{}}'
            FROM generate_series(0, (%(n)s - 1) / %(group)s) g
            """,
            {**params, "n": count, "group": OCTOBER_REQUEST_CONTACTS},
        )
        cursor.execute(
            f"""
            INSERT INTO {LEDGER} (contact_id, request_id, action, from_status, to_status,
                                  requested_at, effective_at, delta, source_type, source_id,
                                  source_name, actor_id)
            SELECT c.id, r.id, a.action, a.from_status, a.to_status, {upgraded} + a.later,
                   COALESCE(a.effective, {upgraded}), a.delta, 'import', '', '', NULL::integer
            FROM {CONTACT} c
            JOIN {REQUEST} r
              ON r.idempotency_key = '{SETUP_KEY}:october:' || ((c.id - 1) / %(group)s)
            CROSS JOIN (VALUES ('upgrade', 'non_marketing', 'marketing', interval '0',
                                NULL::timestamptz, 1),
                               ('downgrade_scheduled', 'marketing', 'non_marketing',
                                interval '1 second', %(end)s::timestamptz, -1))
                AS a(action, from_status, to_status, later, effective, delta)
            WHERE a.action = 'upgrade' OR c.id %% 10 = 0
            """,
            {**params, "group": OCTOBER_REQUEST_CONTACTS},
        )
        for month in range(1, history_months + 1):
            # Month `month` before October: 55 % of the contacts in and out again (net 0),
            # under a request of its own (a request changes a contact once per action).
            cursor.execute(
                f"""
                INSERT INTO {REQUEST} (idempotency_key, operation, fingerprint, source_type,
                                       source_id, source_name, actor_id, requested_at, result)
                VALUES (%(key)s, 'set_marketing', '', 'import', '', 'Benchmark history',
                        NULL, %(start)s::timestamptz - %(months)s * interval '1 month', '{{}}')
                RETURNING id
                """,
                {**params, "key": f"{SETUP_KEY}:{month}", "months": month},
            )
            params["request"] = cursor.fetchone()[0]
            cursor.execute(
                f"""
                INSERT INTO {LEDGER} (contact_id, request_id, action, from_status, to_status,
                                      requested_at, effective_at, delta, source_type,
                                      source_id, source_name, actor_id)
                SELECT c.id, %(request)s, a.action, a.from_status, a.to_status,
                       t.at + a.later, t.at + a.later, a.delta, 'import', '', '',
                       NULL::integer
                FROM {CONTACT} c
                CROSS JOIN LATERAL (
                    SELECT {upgraded} - %(months)s * interval '1 month' AS at
                ) t
                CROSS JOIN (VALUES ('upgrade', 'non_marketing', 'marketing', interval '0', 1),
                                   ('rollover', 'marketing', 'non_marketing',
                                    interval '1 second', -1))
                    AS a(action, from_status, to_status, later, delta)
                WHERE c.id %% 20 < 11
                """,
                {**params, "months": month},
            )
    _contacts_as_before_the_close(count, all_contacts=True)
    scheduled = count // 10
    last = _last_change_at()
    execute(
        f"""
        INSERT INTO {USAGE} (period_start, period_end, opening_count, live_count, peak_count,
                             scheduled_downgrades, updated_at)
        VALUES (%(start)s, %(end)s, 0, %(n)s, %(n)s, %(scheduled)s, %(last)s)
        """,
        params={**params, "n": count, "scheduled": scheduled, "last": last},
    )
    execute(f"INSERT INTO {STATE} (id, last_change_at) VALUES (1, %(last)s)", params={"last": last})
    data.vacuum()
    execute(*(f"VACUUM ANALYZE {table}" for table in BILLING_TABLES))
    data.checkpoint()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {LEDGER}")
        rows = cursor.fetchone()[0]
    return {"contacts": count, "ledger_rows": rows, "scheduled": scheduled, "last_change": last}


def _last_change_at() -> dt.datetime:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MAX(requested_at) FROM {LEDGER}")
        return cursor.fetchone()[0]


def _contacts_as_before_the_close(count: int, *, all_contacts: bool) -> None:
    """Every contact marketing, every 10th pending non-marketing from END."""
    where = "TRUE" if all_contacts else "id %% 10 = 0"
    execute(
        f"""
        UPDATE {CONTACT} c
        SET marketing_status = 'marketing',
            marketing_until = CASE WHEN c.id %% 10 = 0 THEN %(end)s::timestamptz END,
            marketing_reason_type = 'import', marketing_reason_id = '',
            marketing_reason_name = 'Benchmark history',
            marketing_changed_at = {_instant("c.id", count)}
        WHERE {where}
        """,
        params={"start": START, "end": END},
    )


def reset_close(count: int) -> None:
    """Undo what a close (or a rollover alone) wrote; VACUUM ANALYZE, CHECKPOINT."""
    with transaction.atomic():
        execute(
            # The close's rollovers (a longer history holds older ones, kept).
            f"DELETE FROM {LEDGER} WHERE action = 'rollover' AND effective_at >= %(end)s",
            # The probe's changes (changes_during), all asked for after the end.
            f"DELETE FROM {LEDGER} WHERE action <> 'rollover' AND requested_at >= %(end)s",
            f"DELETE FROM {REQUEST} WHERE idempotency_key NOT LIKE '{SETUP_KEY}%%'",
            f"DELETE FROM {USAGE} WHERE period_start <> %(start)s",
            params={"start": START, "end": END},
        )
        execute(*(f"DELETE FROM {table}" for table in BILLING_TABLES))
        execute(
            f"UPDATE {STATE} SET last_change_at = %(last)s, rolled_over_through = NULL",
            params={"last": _last_change_at()},
        )
        _contacts_as_before_the_close(count, all_contacts=False)
    data.vacuum()
    execute(*(f"VACUUM ANALYZE {table}" for table in BILLING_TABLES))
    data.checkpoint()


def close() -> list:
    from billing.services import billing_close_periods

    return billing_close_periods(as_of=END, at=AT)


def rollover():
    from contacts.status.services import contacts_rollover

    return contacts_rollover(as_of=END, at=AT)


def replay():
    from contacts.status.selectors import ledger_replay

    return ledger_replay(start=START, end=END)


def close_holding_the_usage_lock() -> list:
    """The baseline: the close and its rollover in one transaction under the usage lock."""
    from crm.locks import lock_usage

    with transaction.atomic():
        lock_usage()
        return close()


def changes_during(work) -> dict:
    """`work` timed while another connection makes single status changes one after the
    other (a downgrade scheduled, then cancelled, on a contact the close does not touch,
    10 ms apart, the first pair before `work` begins and untimed); each change's wait,
    from its call to its return."""
    from contacts.models import StatusSourceType
    from contacts.status.results import StatusSource
    from contacts.status.services import contacts_set_marketing, contacts_set_non_marketing

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MIN(id) FROM {CONTACT} WHERE id %% %s = 1", [10])
        probe = cursor.fetchone()[0]
    source = StatusSource(StatusSourceType.API, name="Benchmark probe")
    stop = threading.Event()
    waits: list[float] = []
    errors: list[BaseException] = []

    def change_pair() -> list[float]:
        pair = []
        for change in (contacts_set_non_marketing, contacts_set_marketing):
            started = time.perf_counter()
            change(contacts=[probe], source=source, at=AT)
            pair.append(time.perf_counter() - started)
        return pair

    def changes() -> None:
        try:
            try:
                # Untimed: the connection's first change loads what every later one finds
                # cached (1.9 s at 10,000,000 contacts, before the close begins).
                change_pair()
            finally:
                warm.set()
            while not stop.is_set():
                waits.extend(change_pair())
                time.sleep(0.01)
        except BaseException as error:  # raised by the benchmark's thread below
            errors.append(error)
        finally:
            connection.close()

    warm = threading.Event()
    thread = threading.Thread(target=changes)
    thread.start()
    warm.wait()
    try:
        seconds, _ = timed(work)
    finally:
        stop.set()
        thread.join()
    if errors:
        raise errors[0]
    waits.sort()
    return {
        "seconds": seconds,
        "changes": len(waits),
        "p50_ms": waits[len(waits) // 2] * 1000 if waits else 0.0,
        "max_ms": waits[-1] * 1000 if waits else 0.0,
    }


def timed(work):
    started = time.perf_counter()
    value = work()
    return time.perf_counter() - started, value


def check_closed(outcomes: list, count: int) -> dict:
    """The close did what it must: October closed at peak N, November opens with 0.9 N."""
    from contacts.status.models import (
        PeriodUsage,
        StatusChange,
    )

    problems = []
    if len(outcomes) != 1 or outcomes[0].status != "closed":
        problems.append(f"outcomes {[o.as_dict() for o in outcomes]}")
    outcome = outcomes[0] if outcomes else None
    scheduled = count // 10
    if outcome and (outcome.peak_count, outcome.counter_peak_count) != (count, count):
        problems.append(f"peak {outcome.peak_count} / counter {outcome.counter_peak_count}")
    if outcome and outcome.rollover_applied != scheduled:
        problems.append(f"rollover applied {outcome.rollover_applied}")
    november = PeriodUsage.objects.filter(period_start=END).first()
    if november is None or november.opening_count != count - scheduled:
        problems.append(f"November opens with {november and november.opening_count}")
    rollovers = StatusChange.objects.filter(action="rollover", effective_at__gte=END).count()
    if rollovers != scheduled:
        problems.append(f"{rollovers} rollover rows")
    if problems:
        raise AssertionError("The close did not do what it must: " + "; ".join(problems))
    return {
        "status": outcome.status,
        "peak": outcome.peak_count,
        "november_opening": november.opening_count,
        "rollover_rows": rollovers,
        "invoice": outcome.invoice_number,
        "total": outcome.total,
        "currency": outcome.currency,
    }


def explain_replay() -> str:
    from contacts.status.selectors import ledger_replay
    from tests.perf.contenders import explain_first

    return explain_first(lambda: ledger_replay(start=START, end=END), "OVER (ORDER BY effective_at")


def explain_rollover_chunk() -> str:
    from tests.perf.contenders import explain_first

    return explain_first(rollover, "WITH upd AS")


def memory_in_child() -> dict:
    """One close in a fresh process (tests/perf/close_child.py): its peak RSS growth and
    tracemalloc peak. The close's own time there includes tracemalloc's overhead."""
    from tests.perf.child import run_module

    return run_module("tests.perf.close_child", what="the memory run")


def measure_memory() -> dict:
    """In this (fresh) process: one close under tracemalloc, and the peak RSS around it."""
    connection.ensure_connection()
    Subscription.load()
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    seconds, outcomes = timed(close)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds_traced": seconds,
        "status": outcomes[0].status if outcomes else "none",
        "maxrss_before_mb": before_kb / 1024,
        "maxrss_after_mb": after_kb / 1024,
        "rss_growth_mb": (after_kb - before_kb) / 1024,
        "tracemalloc_peak_mb": peak / 1024 / 1024,
    }


def run(count: int, repeat: int, say) -> dict:
    """Set up, then time the close `repeat` times, its pieces, and its memory."""
    say(f"f: setting up {count:,} contacts and their October ledger (untimed)")
    started = time.perf_counter()
    state = setup_close(count)
    result: dict = {**state, "setup_seconds": time.perf_counter() - started}
    say(f"f: {state['ledger_rows']:,} ledger rows in {result['setup_seconds']:.0f} s")
    result["runs"], result["rollover_runs"], result["replay_runs"] = [], [], []
    say("f: one close, untimed (warm-up)")
    close()
    reset_close(count)
    for i in range(repeat):
        say(f"f: close, run {i + 1} of {repeat}")
        seconds, outcomes = timed(close)
        result["runs"].append(seconds)
        result["check"] = check_closed(outcomes, count)
        say(f"     {seconds:.2f} s")
        reset_close(count)
    for i in range(repeat):
        # The replay first (read-only, on the state the close finds), then the rollover.
        seconds, _ = timed(replay)
        result["replay_runs"].append(seconds)
        seconds, applied = timed(rollover)
        result["rollover_runs"].append(seconds)
        say(
            f"f: pieces, run {i + 1}: replay {result['replay_runs'][-1]:.2f} s, rollover "
            f"{seconds:.2f} s ({applied.applied:,} applied)"
        )
        reset_close(count)
    for name, work in (("during", close), ("during_baseline", close_holding_the_usage_lock)):
        say(f"f: a close with status changes made meanwhile ({name.replace('_', ' ')})")
        result[name] = changes_during(work)
        say(
            f"     {result[name]['seconds']:.2f} s; {result[name]['changes']:,} changes, "
            f"p50 {result[name]['p50_ms']:.1f} ms, longest {result[name]['max_ms']:,.0f} ms"
        )
        reset_close(count)
    say("f: memory of one close, in a fresh process")
    result["memory"] = memory_in_child()
    reset_close(count)
    say("f: plans")
    result["plan_replay"] = explain_replay()
    result["plan_rollover"] = explain_rollover_chunk()
    return result
