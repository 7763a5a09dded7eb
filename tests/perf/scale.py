"""o. Scale: the sections the 10,000,000-contact bars name, at a base size and at N.

`python -m tests.perf.run --only scale --contacts 10000000` measures, in one invocation,
at the base size (1,000,000; a tenth of N when N is smaller) and then at N:

- e. one status change (median of `--calls`) at `--small` contacts, at the base and at N;
  the bar: at N ≤ 1.5 × at `--small`;
- f. the month's close (tests/perf/close.py: N marketing contacts, N + N/10 ledger rows,
  a tenth due to roll over), its replay and rollover; the bar: at N ≤ 10 × at the base;
- g. an import of the same 1,000,000 new rows (tests/perf/imports.py, fresh process) into
  the table the close left (base or N contacts); the bar: the rate at N within 10 % of
  the rate at the base;
- k. every list of the API and the admin (tests/perf/reads.py, without the naive
  baseline) over the read data set (tests/perf/read_data.py) of the base and of N
  contacts, searched at N with the base's terms (the same requests: each term matches
  about N ÷ base times as many contacts); the bar: each p50 at N ≤ 1.5 × its p50 at
  the base;
- the size on disk after f and g, and after k's load, at each size: the database and its
  biggest tables with their indexes.

The 1,000,000 figures the bars compare with are these, measured in the same invocation
on the same machine; the stored sections of docs/benchmarks.json are not used.

`--scale-reads-only` runs k alone at the two sizes (the read data sets load in minutes;
e, f and g at 10,000,000 take more than an hour).

`--only history` measures the close at `--contacts` with the ledger holding only the
closed month and with `HISTORY_MONTHS` more months before it (as many rows each), with
the replay's plan at both.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from django.conf import settings

SINGLE_BAR = 1.5  # one status change at N ÷ at the small table
CLOSE_BAR = 10.0  # the close at N ÷ at the base
IMPORT_BAR = 0.10  # the import rate at N within 10 % of the rate at the base
READS_BAR = 1.5  # a list's p50 at N ÷ at the base
IMPORT_ROWS = 1_000_000
HISTORY_MONTHS = 10
BIGGEST_TABLES = 6
PARTIAL = Path(settings.BASE_DIR) / "media" / "bench" / "scale-partial.json"


def base_size(count: int) -> int:
    return 1_000_000 if count > 1_000_000 else max(count // 10, 1_000)


def sizes_on_disk() -> dict:
    """The database's size and its biggest tables: heap, indexes, total (bytes)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # fresh row estimates (a sample per table)
        cursor.execute("SELECT pg_database_size(current_database())")
        database = cursor.fetchone()[0]
        cursor.execute(
            """
            SELECT c.relname, pg_relation_size(c.oid), pg_indexes_size(c.oid),
                   pg_total_relation_size(c.oid), c.reltuples::bigint
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND n.nspname = 'public'
            ORDER BY pg_total_relation_size(c.oid) DESC LIMIT %s
            """,
            [BIGGEST_TABLES],
        )
        tables = {
            name: {"table": heap, "indexes": indexes, "total": total, "rows": rows}
            for name, heap, indexes, total, rows in cursor.fetchall()
        }
    return {"database": database, "tables": tables}


def _gb(size: int) -> str:
    return f"{size / 1024**3:.2f} GB" if size >= 1024**3 else f"{size / 1024**2:.0f} MB"


def at_size(count: int, options, say) -> dict:
    """e, f, g and the size on disk at `count` contacts."""
    from tests.perf import close, contenders, data, imports

    out: dict = {"contacts": count}
    say(f"o: setting up {count:,} contacts")
    started = time.perf_counter()
    data.fill(count)
    out["fill_seconds"] = time.perf_counter() - started
    data.checkpoint()
    pk = data.ids_of_stage(data.LOOP_STAGE, 1)[0]
    say(f"o/e: {options.calls} single changes at {count:,} contacts")
    out["single"] = contenders.single_changes(pk, options.calls)
    say(f"     median {statistics.median(out['single']) * 1000:.2f} ms")
    started = time.perf_counter()
    out["close"] = close.run(count, options.repeat, say)
    out["close_section_seconds"] = time.perf_counter() - started
    say(f"o/g: importing {IMPORT_ROWS:,} new rows into the {count:,} contacts (fresh process)")
    path = imports.write_csv(IMPORT_ROWS)
    started = time.perf_counter()
    out["import"] = imports.in_child(path, keep=True)
    out["import_section_seconds"] = time.perf_counter() - started
    say(f"     {IMPORT_ROWS / out['import']['run_seconds']:,.0f} rows/s")
    data.execute("CHECKPOINT")
    out["size"] = sizes_on_disk()
    say(f"o: database {_gb(out['size']['database'])}")
    return out


def reads_at_size(count: int, options, say, terms: dict[str, str] | None = None) -> dict:
    from tests.perf import reads

    load = reads.ensure_read_data(count, say)
    lists = reads.measure_lists(say, naive=False, terms=terms)
    return {"load": load, "lists": lists, "size": sizes_on_disk()}


def run(options, say) -> dict:
    from tests.perf import data, imports

    count, base = options.contacts, base_size(options.contacts)
    results: dict = {"contacts": count, "base": base, "small": options.small}
    reads_part = [
        ("reads_base", base, reads_at_size),
        # The lists at N, searched for what the base's were.
        (
            "reads_n",
            count,
            lambda size, options, say: reads_at_size(
                size, options, say, terms=results["reads_base"]["lists"]["terms"]
            ),
        ),
    ]
    if getattr(options, "scale_reads_only", False):
        results.update(_stored(count, WORK_PARTS, WORK_SECONDS, "work", say))
        return _measure_parts(results, reads_part, options, say)
    if getattr(options, "scale_work_only", False):
        results.update(_stored(count, READ_PARTS, READ_PARTS, "reads", say))
        reads_part = []
    started = time.perf_counter()
    say(f"o/e: {options.calls} single changes at {options.small:,} contacts")
    data.fill(options.small)
    data.checkpoint()
    pk = data.ids_of_stage(data.LOOP_STAGE, 1)[0]
    from tests.perf import contenders

    results["single_small"] = contenders.single_changes(pk, options.calls)
    say(f"o/g: importing {IMPORT_ROWS:,} new rows into empty tables (fresh process)")
    results["import_empty"] = imports.in_child(imports.write_csv(IMPORT_ROWS))
    say(f"     {IMPORT_ROWS / results['import_empty']['run_seconds']:,.0f} rows/s")
    results["seconds"] = {"small": time.perf_counter() - started, **results.get("seconds", {})}
    parts = [(key, size, at_size) for key, size in (("at_base", base), ("at_n", count))]
    return _measure_parts(results, parts + reads_part, options, say)


# The scale section's parts, and the keys of their seconds in its "seconds".
WORK_PARTS = ("single_small", "import_empty", "at_base", "at_n")
WORK_SECONDS = ("small", "at_base", "at_n")
READ_PARTS = ("reads_base", "reads_n")
_KEPT = {"work": "e, f and g", "reads": "the lists"}


def _stored(count: int, parts: tuple, seconds: tuple, what: str, say) -> dict:
    """`parts` of the stored scale section and their seconds, when it was measured at the
    same size: a run of the other parts alone keeps them beside its own. The section's
    date becomes the run's, so the kept parts' own date goes with them (`<what>_measured`)
    and the rows say it."""
    from tests.perf.report import STORE

    stored = json.loads(STORE.read_text()).get("o. scale", {}) if STORE.exists() else {}
    scale = stored.get("results", {}).get("scale", {})
    kept = {key: scale[key] for key in parts if key in scale}
    if scale.get("contacts") != count or not kept:
        return {"seconds": {}}
    measured = scale.get(f"{what}_measured", stored["measured"])
    say(f"o: keeping {_KEPT[what]} as measured {measured}")
    times = {k: v for k, v in scale.get("seconds", {}).items() if k in seconds}
    return {**kept, "seconds": times, f"{what}_measured": measured}


def _measure_parts(results: dict, parts: list, options, say) -> dict:
    for key, size, measure in parts:
        started = time.perf_counter()
        results[key] = measure(size, options, say)
        results["seconds"][key] = time.perf_counter() - started
        # A long run keeps what it measured so far (media/bench/scale-partial.json).
        PARTIAL.parent.mkdir(parents=True, exist_ok=True)
        PARTIAL.write_text(json.dumps(results, default=str))
    return results


def run_history(options, say) -> dict:
    """The close at `--contacts` with the closed month alone, then with HISTORY_MONTHS
    older months in the ledger."""
    from tests.perf import close, data

    count = options.contacts
    out: dict = {"contacts": count, "months": HISTORY_MONTHS}
    for key, months in (("alone", 0), ("history", HISTORY_MONTHS)):
        say(f"history: {count:,} contacts, {months} older months (untimed setup)")
        started = time.perf_counter()
        state = close.setup_close(count, history_months=months)
        entry: dict = {**state, "setup_seconds": time.perf_counter() - started}
        entry["runs"], entry["replay_runs"] = [], []
        for i in range(options.repeat):
            seconds, outcomes = close.timed(close.close)
            entry["runs"].append(seconds)
            close.check_closed(outcomes, count)
            close.reset_close(count)
            seconds, _ = close.timed(close.replay)
            entry["replay_runs"].append(seconds)
            say(f"     close {entry['runs'][-1]:.2f} s, replay {seconds:.2f} s (run {i + 1})")
        entry["plan_replay"] = close.explain_replay()
        entry["size"] = sizes_on_disk()
        out[key] = entry
    data.execute(f"TRUNCATE {data.LEDGER}, {data.REQUEST} CASCADE")
    return out


def _waits_during_close(b: dict, t: dict, base: int, n: int) -> list[tuple[str, str, str]]:
    """A status change's longest wait during the close, at both sizes, and before."""
    if "during" not in b or "during" not in t:
        return []
    return [
        (
            f"o. f. a status change during the close: its longest wait, {base:,} → {n:,} contacts",
            f"{b['during']['max_ms']:,.0f} → {t['during']['max_ms']:,.0f} ms",
            f"{b['during']['changes']:,} and {t['during']['changes']:,} changes made one after "
            "another while the month closed; with the close holding the usage lock throughout "
            f"(before): {b['during_baseline']['max_ms']:,.0f} → "
            f"{t['during_baseline']['max_ms']:,.0f} ms",
        )
    ]


def rows(results: dict) -> list[tuple[str, str, str]]:
    if "scale" not in results and "history" not in results:
        return []
    out = []
    if "scale" in results:
        out += scale_rows(results["scale"])
    if "history" in results:
        out += history_rows(results["history"])
    return out


def _verdict(ratio: float, bar: float) -> str:
    return "meets the bar" if ratio <= bar else "MISSES the bar"


def _size_note(size: dict) -> str:
    tables = "; ".join(
        f"{name} {_gb(t['total'])} (table {_gb(t['table'])}, indexes {_gb(t['indexes'])}, "
        f"{t['rows']:,} rows)"
        for name, t in list(size["tables"].items())[:3]
    )
    return f"{tables}"


def scale_rows(r: dict) -> list[tuple[str, str, str]]:
    """The rows of what ran: e, f and g with their sizes unless the run read only (k)."""
    out = _work_rows(r) if "at_n" in r else []
    if out and "work_measured" in r:
        label, value, note = out[0]
        out[0] = (
            label,
            value,
            f"{note}; e, f and g measured {r['work_measured']}, the lists later",
        )
    if "reads_n" in r:
        reads = _read_rows(r)
        if "reads_measured" in r:
            label, value, note = reads[0]
            reads[0] = (label, value, f"{note}; the lists measured {r['reads_measured']}")
        out += reads
    out.append(
        (
            "o. time of each part",
            f"{sum(r['seconds'].values()):,.0f} s",
            ", ".join(f"{k} {v:,.0f} s" for k, v in r["seconds"].items()),
        )
    )
    return out


def _work_rows(r: dict) -> list[tuple[str, str, str]]:
    n, base, small = r["contacts"], r["base"], r["small"]
    b, t = r["at_base"], r["at_n"]
    single_small = statistics.median(r["single_small"]) * 1000
    single_base = statistics.median(b["single"]) * 1000
    single_n = statistics.median(t["single"]) * 1000
    close_base = statistics.median(b["close"]["runs"])
    close_n = statistics.median(t["close"]["runs"])
    replay_base = statistics.median(b["close"]["replay_runs"])
    replay_n = statistics.median(t["close"]["replay_runs"])
    rate_base = IMPORT_ROWS / b["import"]["run_seconds"]
    rate_n = IMPORT_ROWS / t["import"]["run_seconds"]
    rate_empty = IMPORT_ROWS / r["import_empty"]["run_seconds"]
    out = [
        (
            f"o. e. one status change: {small:,} → {base:,} → {n:,} contacts",
            f"{single_small:.2f} → {single_base:.2f} → {single_n:.2f} ms",
            f"medians of {len(r['single_small'])}; at {n:,} ÷ at {small:,} "
            f"{single_n / single_small:.2f}× (bar ≤ {SINGLE_BAR}): "
            + _verdict(single_n / single_small, SINGLE_BAR),
        ),
        (
            f"o. f. close the month: {base:,} → {n:,} contacts "
            f"({b['close']['ledger_rows']:,} → {t['close']['ledger_rows']:,} ledger rows)",
            f"{close_base:.2f} → {close_n:.2f} s",
            f"{close_n / close_base:.1f}× (bar ≤ {CLOSE_BAR:.0f}×): "
            + _verdict(close_n / close_base, CLOSE_BAR)
            + f"; the replay {replay_base:.2f} → {replay_n:.2f} s, the rollover "
            f"{statistics.median(b['close']['rollover_runs']):.2f} → "
            f"{statistics.median(t['close']['rollover_runs']):.2f} s; memory (tracemalloc "
            f"peak) {b['close']['memory']['tracemalloc_peak_mb']:.1f} → "
            f"{t['close']['memory']['tracemalloc_peak_mb']:.1f} MB; set-up "
            f"{b['close']['setup_seconds']:.0f} → {t['close']['setup_seconds']:.0f} s",
        ),
        *_waits_during_close(b["close"], t["close"], base, n),
        (
            f"o. g. import {IMPORT_ROWS:,} new rows into {base:,} → {n:,} contacts",
            f"{rate_base:,.0f} → {rate_n:,.0f} rows/s",
            f"{b['import']['run_seconds']:.1f} → {t['import']['run_seconds']:.1f} s; "
            f"{rate_n / rate_base:.2f}× the rate (bar ≥ {1 - IMPORT_BAR:.2f}×): "
            + _verdict(1 - IMPORT_BAR, rate_n / rate_base)
            + f"; peak RSS {b['import']['maxrss_mb']:.0f} → {t['import']['maxrss_mb']:.0f} MB; "
            f"into empty tables in the same run {rate_empty:,.0f} rows/s; phases at {n:,}: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in t["import"]["phases"].items()),
        ),
    ]
    for key in ("at_base", "at_n"):
        entry = r[key]
        out.append(
            (
                f"o. size on disk, {entry['contacts']:,} contacts after f and g",
                _gb(entry["size"]["database"]),
                _size_note(entry["size"]),
            )
        )
    return out


def _read_rows(r: dict) -> list[tuple[str, str, str]]:
    from tests.perf.reads import in_path_order

    n, base = r["contacts"], r["base"]
    rb, rn = r["reads_base"]["lists"], r["reads_n"]["lists"]
    out, worst = [], 0.0
    for side in ("api", "admin"):
        for name, entry in in_path_order(side, rn[side]):
            before = rb[side].get(name)
            if not before:
                continue
            ratio = entry["p50"] / before["p50"]
            worst = max(worst, ratio)
            out.append(
                (
                    f"o. k. {side} {name}: {base:,} → {n:,} contacts",
                    f"p50 {before['p50']:.1f} → {entry['p50']:.1f} ms",
                    f"{ratio:.2f}× (bar ≤ {READS_BAR}): {_verdict(ratio, READS_BAR)}; p95 "
                    f"{before['p95']:.1f} → {entry['p95']:.1f} ms; database "
                    f"{before['db_p50']:.1f} → {entry['db_p50']:.1f} ms",
                )
            )
    out.append(
        (
            f"o. k. the worst p50 ratio, {base:,} → {n:,}",
            f"{worst:.2f}×",
            f"{_verdict(worst, READS_BAR)}; searched at both sizes for "
            + ", ".join(f'"{term}"' for term in rn.get("terms", {}).values()),
        )
    )
    for key, size in (("reads_base", base), ("reads_n", n)):
        entry = r[key]
        load = entry["load"].get("seconds")
        out.append(
            (
                f"o. size on disk, the read data set of {size:,} contacts",
                _gb(entry["size"]["database"]),
                (f"loaded in {load:.0f} s; " if load else "") + _size_note(entry["size"]),
            )
        )
    return out


def history_rows(h: dict) -> list[tuple[str, str, str]]:
    a, b = h["alone"], h["history"]
    close_a, close_b = statistics.median(a["runs"]), statistics.median(b["runs"])
    replay_a, replay_b = statistics.median(a["replay_runs"]), statistics.median(b["replay_runs"])
    return [
        (
            f"f. history: close at {h['contacts']:,} contacts, the closed month alone → "
            f"{h['months']} older months ({a['ledger_rows']:,} → {b['ledger_rows']:,} ledger rows)",
            f"{close_a:.2f} → {close_b:.2f} s",
            f"{close_b / close_a:.2f}×; the replay {replay_a:.2f} → {replay_b:.2f} s "
            f"({replay_b / replay_a:.2f}×); ledger {_gb(a['size']['tables'].get('contacts_statuschange', {}).get('total', 0))}"
            f" → {_gb(b['size']['tables'].get('contacts_statuschange', {}).get('total', 0))}",
        )
    ]
