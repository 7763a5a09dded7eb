"""`make bench`: the marketing-status benchmarks on PostgreSQL (DESIGN §4).

    DATABASE_URL=postgres://…/marketable_bench python -m tests.perf.run [--contacts N] …

A benchmark measures speed; it is not a test. In one run, against the DATABASE_URL
database (created and migrated if missing; its contacts tables are wiped):

a. set up N (1,000,000) non-marketing contacts with INSERT … SELECT, VACUUM ANALYZE;
b. a bulk change of a tenth of them (100,000) to marketing through
   `contacts_set_marketing`, ledger and counters included, for two shapes of selection:
   spread over the table (`lifecycle_stage = 'mql'`, every 10th contact) and dense (one
   import: a range of 100,000 ids);
c. the same work as hand-written SQL (one statement, after the lock, request and
   counter rows), on the same contacts after a reset; the bar: b ≤ 1.1 × c;
d. per-contact loops over a sample: the service once per contact id, and the naive ORM
   loop (save() and a ledger row per contact), extrapolated to the bulk size;
e. one status change (median of alternating set marketing / set non-marketing calls)
   with a small table (10,000) and with N; the bar: ratio ≤ 1.5 (O(1));
f. closing a month (`billing_close_periods`) with N marketing contacts and N + N/10
   ledger rows, a tenth of them due to roll over: the median of `--repeat` closes, the
   rollover and the ledger replay timed alone, the memory of one close in a fresh
   process; the bar: ≤ 5 s, bounded memory (tests/perf/close.py). `--only close` runs
   just this section;
g. a CSV import of 1,000,000 new contacts (`contact_import_run`, tests/perf/imports.py),
   and of 100,000, each in a fresh process for its peak RSS; against a hand-written COPY
   + INSERT … SELECT of the same file and a per-row `contact_create` loop; the bars:
   ≥ 0.87 × the hand-written rate, peak RSS at 1M ≤ 1.5 × at 100k. `--only import` runs just this.
h. exporting contacts as CSV (tests/perf/exports.py): the streamed export of 100,000 and
   of N contacts, each in a fresh process (rows/s, peak RSS; the bar: ratio ≤ ~1.2),
   against the naive `list()` + csv.writer of 100,000. `--only export` runs just this.
i. a marketing definition (a 5-filter workflow) re-evaluated over N contacts, enrollments
   and ledger rows included, against one hand-written statement (bars: ≤ 1.1× and ≤ 4 s) and a
   per-contact loop extrapolated (bar ≥ 50×); one contact's event evaluation at 10,000 and
   N (bar: ratio ≤ 1.5) (tests/perf/workflows.py). `--only workflows` runs just this.
j. engagement (tests/perf/engagement.py): 100,000 events ingested in 10 batches of 10,000
   through the ingestion service and scoring, as the API does (bar: ≤ 5 s), a retry, one
   batch through the API client, a naive per-event loop on `--loop` events (extrapolated),
   and the full score recompute. `--only engagement` runs just this.
k. reads (tests/perf/reads.py): every contacts list of the API and the admin — unfiltered,
   each filter, each kind of search, a second page — over the demo data of N contacts,
   p50/p95 server time of 30 requests each (bar: 50 ms / 100 ms), against the same lists
   with Django's and DRF's default counting paginators and no search index. `--only
   reads` runs just this.
l. concurrent load (tests/perf/load.py): 16 clients against gunicorn on loopback — list
   reads, single status changes, public form submissions, and the same against Django's
   runserver (the naive baseline); how long one change and one submission hold the usage
   lock alone (the ceiling of their rates); deadlocks and the counters against the ledger
   afterwards. `--only load` runs just this (not part of the full run).
m. the embedded default, SQLite (tests/perf/sqlite.py), in fresh processes on a temporary
   file: migrate and `seed_demo` (5,000 and `--sqlite-contacts`, 100,000), section k's
   lists over the demo data, and a bulk change of 100,000 of 1,000,000 contacts to marketing
   and back to non-marketing through the service against hand-written SQL. `--only sqlite`
   runs just this.
n. the score recompute, two workflow runs and an import, each shared by real Celery workers
   on Redis, 1 worker against 2, against the same work in one process (tests/perf/workers.py).
   `--only workers` runs just this (not part of the full run: it needs Redis).

Between runs every contender gets the same state: contacts non-marketing again, the
ledger and counters truncated, VACUUM ANALYZE, CHECKPOINT. One untimed hand-written run
over both selections first moves every selected row once, as every later run finds
them; then the contenders alternate, and the median of `--repeat` runs counts. The plans of the service's first
chunk statement and of the hand-written statement are kept for the report.

Prints a table and rewrites the generated section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings.local")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql":
        print(
            "The benchmark runs on PostgreSQL only (it measures PostgreSQL's fast paths).\n"
            "Set DATABASE_URL, e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/"
            "marketable_bench — `make bench` does.",
            file=sys.stderr,
        )
        return 2
    # Production-like: no query log kept in memory, no alert mail on the console.
    settings.DEBUG = False
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

    from tests.perf import report
    from tests.perf.data import ensure_database

    started = time.monotonic()
    load_at_start = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    ensure_database()
    results = run(options)
    results["total_seconds"] = time.monotonic() - started
    results["load_at_start"] = load_at_start
    text = report.table(results)
    print(text)
    if options.write:
        path = report.write_markdown(report.store(results))
        print(f"\nWrote {path} (and {report.STORE.name})")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.run", description=__doc__)
    parser.add_argument("--contacts", type=int, default=1_000_000, help="the large table")
    parser.add_argument("--small", type=int, default=10_000, help="the small table (e)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each bulk contender")
    parser.add_argument("--loop", type=int, default=1_000, help="contacts in each per-contact loop")
    parser.add_argument("--calls", type=int, default=300, help="single changes timed at each size")
    parser.add_argument(
        "--only",
        choices=[
            "status",
            "close",
            "import",
            "export",
            "workflows",
            "engagement",
            "reads",
            "sqlite",
            "workers",
            "load",
            "scale",
            "history",
        ],
        help="run one section only (status: a.–e., close: f., import: g., export: h., "
        "workflows: i., engagement: j., reads: k., load: l., sqlite: m., workers: n.; scale: e, f, g and k at "
        "1M and at --contacts, o.; history: the close with and without ten older months of "
        "ledger; l., n., o. and history only this way); its rows in the docs are updated, the "
        "others kept",
    )
    parser.add_argument(
        "--sqlite-contacts",
        type=int,
        default=100_000,
        help="m: the demo contacts on SQLite, and the bulk change's size (of 10× as many)",
    )
    parser.add_argument(
        "--scale-reads-only",
        action="store_true",
        help="o: the lists (k) at the base size and at --contacts, without e, f and g",
    )
    parser.add_argument(
        "--scale-work-only",
        action="store_true",
        help="o: e, f and g at the base size and at --contacts, keeping the lists (k) stored",
    )
    parser.add_argument(
        "--seed-demo",
        action="store_true",
        help="k: read over `seed_demo` data (slow) instead of tests/perf/read_data.py's",
    )
    parser.add_argument(
        "--no-write", dest="write", action="store_false", help="print only; leave the docs alone"
    )
    from tests.perf import load

    load.add_arguments(parser)
    return parser.parse_args(argv)


def run(options: argparse.Namespace) -> dict:
    from tests.perf import (
        close,
        engagement,
        exports,
        imports,
        load,
        reads,
        scale,
        sqlite,
        workflows,
    )

    results: dict = {"options": vars(options)}

    def say(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    if options.only == "close":
        results["close"] = close.run(options.contacts, options.repeat, say)
        return results
    if options.only == "import":
        results["imports"] = imports.run(options, say)
        return results
    if options.only == "export":
        results["export"] = exports.run(options, say)
        return results
    if options.only == "engagement":
        results["engagement"] = engagement.run(options, say)
        return results
    if options.only == "workflows":
        results["workflows"] = workflows.run(options, say)
        return results
    if options.only == "scale":
        results["scale"] = scale.run(options, say)
        return results
    if options.only == "history":
        results["history"] = scale.run_history(options, say)
        return results
    if options.only == "reads":
        results["reads"] = reads.run(options, say)
        return results
    if options.only == "sqlite":
        results["sqlite"] = sqlite.run(options, say)
        return results
    if options.only == "workers":  # real Celery workers on Redis: not part of the full run
        from tests.perf import workers

        results["workers"] = workers.run(options, say)
        return results
    if options.only == "load":  # a gunicorn server and client processes: not part of the full run
        results["load"] = load.run(options, say)
        return results

    status_service(options, results, say)
    if options.only == "status":
        return results
    # f
    results["close"] = close.run(options.contacts, options.repeat, say)
    # g
    results["imports"] = imports.run(options, say)
    # h
    results["export"] = exports.run(options, say)
    # i
    results["workflows"] = workflows.run(options, say)
    # j
    results["engagement"] = engagement.run(options, say)
    # k, last: it replaces the synthetic contacts with the demo data
    results["reads"] = reads.run(options, say)
    # m, in child processes on their own SQLite file
    results["sqlite"] = sqlite.run(options, say)
    return results


def status_service(options: argparse.Namespace, results: dict, say) -> None:
    """a.–e.: the status service in bulk and once, against hand-written SQL and loops."""
    from django.db.models import Max, Min

    from contacts.models import Contact
    from contacts.status.sql import STATUS_RANGE_BATCH
    from tests.perf import contenders, data

    # e, small table first, then a, then e on the large table.
    say(f"setting up {options.small:,} contacts")
    data.fill(options.small)
    data.checkpoint()
    pk = data.ids_of_stage(data.LOOP_STAGE, 1)[0]
    say(f"e: {options.calls} single changes at {options.small:,} contacts")
    results["single_small"] = contenders.single_changes(pk, options.calls)

    # a
    say(f"a: setting up {options.contacts:,} contacts")
    started = time.perf_counter()
    data.fill(options.contacts)
    results["setup_seconds"] = time.perf_counter() - started

    # e, large table, right after the small one: less drift in the machine's other load.
    data.checkpoint()
    pk = data.ids_of_stage(data.LOOP_STAGE, 1)[0]
    say(f"e: {options.calls} single changes at {options.contacts:,} contacts")
    results["single_large"] = contenders.single_changes(pk, options.calls)

    # b and c, for two shapes of the same number of contacts
    tenth = options.contacts // 10
    selections = {
        "spread": (
            f"every 10th contact (`lifecycle_stage = '{data.BULK_STAGE}'`)",
            Contact.objects.filter(lifecycle_stage=data.BULK_STAGE),
            f"lifecycle_stage = '{data.BULK_STAGE}'",
        ),
        "dense": (
            f"one import: ids 1–{tenth:,} (`id <= {tenth}`)",
            Contact.objects.filter(pk__lte=tenth),
            f"id <= {tenth}",
        ),
    }
    results["bulk"] = {}
    # Warm-up, untimed: every selected row is moved once, as every timed run finds them.
    say("b/c: warm-up (untimed)")
    contenders.handwritten_bulk(" OR ".join(f"({where})" for _, _, where in selections.values()))
    for key, (label, queryset, where) in selections.items():
        bounds = queryset.aggregate(lo=Min("pk"), hi=Max("pk"))
        entry = {
            "label": label,
            "size": queryset.count(),
            "chunks": (bounds["hi"] - bounds["lo"]) // STATUS_RANGE_BATCH + 1,
            "runs": {"service": [], "handwritten": []},
        }
        contenders_by_name = {
            "service": lambda queryset=queryset: contenders.service_bulk(queryset),
            "handwritten": lambda where=where: contenders.handwritten_bulk(where),
        }
        for round_ in range(options.repeat):
            order = list(contenders_by_name) if round_ % 2 == 0 else list(contenders_by_name)[::-1]
            for name in order:
                data.reset()
                say(f"b/c {key}: {name}, run {round_ + 1} of {options.repeat}")
                entry["runs"][name].append(contenders_by_name[name]())
                say(f"     {entry['runs'][name][-1]:.2f} s")
        entry["medians"] = {name: statistics.median(v) for name, v in entry["runs"].items()}
        say(f"b/c {key}: plans")
        data.reset()
        # Both explained runs are rolled back, so one reset serves both.
        entry["plan_service"] = contenders.explain_service_chunk(queryset)
        entry["plan_handwritten"] = contenders.explain_handwritten(where)
        results["bulk"][key] = entry

    # d
    data.reset()
    ids = data.ids_of_stage(data.LOOP_STAGE, 2 * options.loop)
    say(f"d: the service once per contact, {options.loop:,} contacts")
    results["service_loop"] = contenders.service_loop(ids[: options.loop])
    say(f"d: naive ORM loop, {options.loop:,} contacts")
    results["naive_loop"] = contenders.naive_orm_loop(ids[options.loop :])


if __name__ == "__main__":
    sys.exit(main())
