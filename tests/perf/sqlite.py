"""m. The embedded default: what the `make run` user gets, on SQLite.

`make run` serves a SQLite file (crm/settings/base.py: WAL, synchronous=NORMAL, a busy
timeout, IMMEDIATE transactions) with Celery tasks run in-process. The rest of the benchmark
runs on PostgreSQL and its process is set up for it, so every piece of this section runs in
fresh processes whose environment has no DATABASE_URL (nor broker, cache or replica URL)
and a `SQLITE_PATH` in a temporary directory, removed at the end:

1. `manage.py migrate` into an empty file, then `manage.py seed_demo` with `make run`'s
   5,000 contacts and with `--sqlite-contacts` (100,000), each a copy of the migrated file,
   timed as the command runs (process start to exit);
2. over the 100,000 demo contacts, every contacts list of the API and the admin, timed by
   tests/perf/reads.py's own code (p50/p95 server time, queries a request) against the
   same naive baseline (Django's and DRF's counting paginators). The search indexes are
   PostgreSQL's (the name, company and email prefix indexes): on SQLite the search scans either way;
3. on another copy, ten times as many synthetic contacts (1,000,000; one recursive-CTE
   INSERT), every 10th selected (`lifecycle_stage = 'mql'`, as section b): the bulk change
   to marketing through `contacts_set_marketing` (ledger and counters included) against
   the same work written by hand for SQLite; then the same contacts set non-marketing (the
   downgrade deferred to the period's end) through `contacts_set_non_marketing` against
   its hand-written form. Each timed run starts from the same state (contacts reset, ledger
   and counters emptied, the WAL checkpointed); the contenders alternate and the median of
   `--repeat` runs counts.

Each child prints one line of JSON: `python -m tests.perf.sqlite reads|bulk …`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Set in the parent's environment, these would point a child elsewhere than its file.
_UNSET = ("DATABASE_URL", "DATABASE_REPLICA_URL", "CELERY_BROKER_URL", "CACHE_URL")
TABLE_FACTOR = 10  # the bulk change's table: ten times the contacts it changes


# --- the parent (PostgreSQL's benchmark process) --------------------------------


def child_env(directory: Path, database: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _UNSET}
    env.update(
        DJANGO_SETTINGS_MODULE="crm.settings.local",
        SQLITE_PATH=str(database),
        CACHE_DIR=str(directory / "cache"),
        # seed_demo creates the admin user: with a password given, it writes no file.
        ADMIN_PASSWORD=secrets.token_urlsafe(12),
    )
    return env


def in_child(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Run `python <args>` in env; its wall seconds and stdout. Its stderr (progress) shows."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, *args], env=env, stdout=subprocess.PIPE, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"the SQLite child {' '.join(args)} failed:\n{out.stdout}")
    return seconds, out.stdout


def run(options, say) -> dict:
    size = options.sqlite_contacts
    directory = Path(tempfile.mkdtemp(prefix="marketable-sqlite-"))
    manage = str(Path(__file__).resolve().parents[2] / "manage.py")
    results: dict = {"contacts": size}
    try:
        empty = directory / "empty.sqlite3"
        say("m: migrate an empty SQLite file")
        results["migrate_seconds"], _ = in_child(
            [manage, "migrate", "--noinput", "-v0"], child_env(directory, empty)
        )

        def copy(name: str) -> tuple[Path, dict[str, str]]:
            path = directory / f"{name}.sqlite3"
            shutil.copyfile(empty, path)
            return path, child_env(directory, path)

        results["seed_seconds"] = {}
        for count in sorted({5_000, size}):
            path, env = copy(f"demo{count}")
            say(f"m: seed_demo --contacts {count:,}")
            seconds, _ = in_child([manage, "seed_demo", "--contacts", str(count), "-v0"], env)
            results["seed_seconds"][str(count)] = seconds
            say(f"     {seconds:.1f} s")
            if count == size:
                results["demo_file_mb"] = path.stat().st_size / 1e6
                say(f"m: reads over {size:,} demo contacts")
                _, stdout = in_child(["-m", "tests.perf.sqlite", "reads"], env)
                results.update(json.loads(stdout.strip().splitlines()[-1]))
            path.unlink()
        path, env = copy("bulk")
        say(f"m: bulk changes of {size:,} in {size * TABLE_FACTOR:,} synthetic contacts")
        _, stdout = in_child(
            ["-m", "tests.perf.sqlite", "bulk", "--size", str(size)]
            + ["--repeat", str(options.repeat)],
            env,
        )
        results.update(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return results


# --- the children (SQLite) ------------------------------------------------------


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def engine() -> dict[str, str]:
    """The SQLite library's version and the connection's journal settings."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT sqlite_version()")
        version = cursor.fetchone()[0]
        cursor.execute("PRAGMA journal_mode")
        journal = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[cursor.fetchone()[0]]
    return {"version": version, "journal_mode": journal, "synchronous": synchronous}


def checkpoint() -> None:
    """Write the WAL back into the file and empty it, so each run starts with no backlog."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def fill(count: int) -> float:
    """`count` non-marketing contacts by one INSERT … SELECT over a recursive CTE, the same
    rows as data.fill writes on PostgreSQL. Returns the seconds it took. No ANALYZE, here
    or after seed_demo: nothing in the product runs it on SQLite, so its user plans without
    statistics too."""
    from django.db import connection, transaction
    from django.utils import timezone

    from tests.perf import data

    started = time.perf_counter()
    source = data.bench_source()
    stage = " ".join(f"WHEN {i} THEN '{s.value}'" for i, s in enumerate(data.STAGES))
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with transaction.atomic():
        data.execute(
            f"""
            INSERT INTO {data.CONTACT} (
                created_at, updated_at, email, first_name, last_name, company, phone,
                lifecycle_stage, lead_status, contact_type, unsubscribed, hard_bounced,
                lead_score, last_engaged_at, source_id, marketing_status, marketing_until,
                marketing_reason_type, marketing_reason_id, marketing_reason_name,
                marketing_changed_at
            )
            WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < %s)
            SELECT strftime('%%Y-%%m-%%d %%H:%%M:%%f', %s, '-' || n || ' minutes'), %s,
                   'person' || n || '@bench.example', 'First' || n %% 997,
                   'Last' || n %% 1009, 'Company ' || n %% 5003, '',
                   CASE n %% 10 {stage} END, '', 'prospect', n %% 50 = 0, n %% 97 = 0,
                   n %% 101, strftime('%%Y-%%m-%%d %%H:%%M:%%f', %s, '-' || (n %% 120) || ' days'),
                   %s, 'non_marketing', NULL, '', '', '', NULL
            FROM g
            """,
            params=[count, now, now, now, source.pk],
        )
    checkpoint()
    return time.perf_counter() - started


def reset() -> None:
    """Every contact non-marketing again, the ledger and the counters empty (DELETE: SQLite
    has no TRUNCATE), the WAL checkpointed."""
    from tests.perf import data

    data.execute(
        f"""
        UPDATE {data.CONTACT} SET marketing_status = 'non_marketing', marketing_until = NULL,
               marketing_reason_type = '', marketing_reason_id = '', marketing_reason_name = '',
               marketing_changed_at = NULL
        WHERE marketing_status <> 'non_marketing' OR marketing_until IS NOT NULL
        """,
        *(f"DELETE FROM {table}" for table in (data.LEDGER, data.REQUEST, data.USAGE, data.STATE)),
    )
    checkpoint()


def handwritten(where: str, operation: str) -> float:
    """The service's work on SQLite written by hand: after the lock, counter and request rows
    (contenders.handwritten_prelude), the ledger rows by one INSERT … SELECT, the contacts by
    one UPDATE, the counter by one UPDATE. SQLite has no UPDATE inside a WITH, so the one
    statement of PostgreSQL's contender is these three here. In the benchmark's states every
    selected contact changes: to marketing, all are upgrades (none has a downgrade pending);
    to non-marketing, all are marketing and settled."""
    from django.db import connection, transaction

    from contacts.status.models import LedgerAction
    from contacts.status.sql import LEDGER_COLUMNS
    from tests.perf.contenders import handwritten_prelude, timed
    from tests.perf.data import CONTACT, LEDGER, USAGE

    reason = (
        "marketing_reason_type = %(type)s, marketing_reason_id = '', marketing_reason_name = '', "
        "marketing_changed_at = %(now)s, updated_at = %(now)s"
    )
    if operation == "set_marketing":
        needs = "(marketing_status <> 'marketing' OR marketing_until IS NOT NULL)"
        row = f"'{LedgerAction.UPGRADE.value}', 'non_marketing', 'marketing', %(now)s, %(now)s, 1"
        assignments = f"marketing_status = 'marketing', marketing_until = NULL, {reason}"
        counter = (
            "live_count = live_count + %(n)s, peak_count = MAX(peak_count, live_count + %(n)s)"
        )
    else:
        needs = "(marketing_status = 'marketing' AND marketing_until IS NULL)"
        row = (
            f"'{LedgerAction.DOWNGRADE_SCHEDULED.value}', 'marketing', 'non_marketing', "
            "%(now)s, %(end)s, -1"
        )
        assignments = f"marketing_until = %(end)s, {reason}"
        counter = "scheduled_downgrades = scheduled_downgrades + %(n)s"

    def work():
        with transaction.atomic(), connection.cursor() as cursor:
            prelude, params = handwritten_prelude(operation)
            for sql in prelude:
                cursor.execute(sql, params)
            params = {**params, "request": cursor.fetchone()[0]}
            cursor.execute(
                f"INSERT INTO {LEDGER} ({LEDGER_COLUMNS}) "
                f"SELECT id, %(request)s, {row}, %(type)s, '', '', NULL "
                f"FROM {CONTACT} WHERE {where} AND {needs}",
                params,
            )
            params["n"] = cursor.rowcount
            cursor.execute(f"UPDATE {CONTACT} SET {assignments} WHERE {where} AND {needs}", params)
            cursor.execute(
                f"UPDATE {USAGE} SET {counter}, updated_at = %(now)s "
                "WHERE period_start = %(start)s",
                params,
            )

    return timed(work)


def bulk(size: int, repeat: int) -> dict:
    """The two bulk changes of `size` contacts in a table of TABLE_FACTOR × size."""
    from contacts.models import Contact
    from contacts.status.services import contacts_set_non_marketing
    from contacts.status.sql import STATUS_RANGE_BATCH
    from tests.perf import contenders, data

    table = size * TABLE_FACTOR
    say(f"m: {table:,} synthetic contacts (one INSERT … SELECT)")
    result: dict = {"bulk": {"table": table, "setup_seconds": fill(table)}}
    where = f"lifecycle_stage = '{data.BULK_STAGE}'"
    selected = Contact.objects.filter(lifecycle_stage=data.BULK_STAGE)
    entry = result["bulk"]
    entry.update(
        label=f"every 10th contact (`{where}`)",
        size=selected.count(),
        chunks=-(-table // STATUS_RANGE_BATCH),
        runs={name: [] for name in ("service", "handwritten", "service_non", "handwritten_non")},
    )

    def marketing_first(run):
        """From the reset state, the selection made marketing (untimed), then `run`."""

        def both() -> float:
            handwritten(where, "set_marketing")
            checkpoint()
            return run()

        return both

    contenders_by_round = [
        {
            "service": lambda: contenders.service_bulk(selected),
            "handwritten": lambda: handwritten(where, "set_marketing"),
        },
        {
            "service_non": marketing_first(
                lambda: contenders.timed(
                    lambda: contacts_set_non_marketing(contacts=selected, source=contenders.BULK)
                )
            ),
            "handwritten_non": marketing_first(lambda: handwritten(where, "set_non_marketing")),
        },
    ]
    # Warm-up, untimed: every selected row moved once, and the service called once, as this
    # fresh process's first call pays for what it loads on first use (the billing hooks).
    say("m: warm-up (untimed)")
    handwritten(where, "set_marketing")
    reset()
    contenders.service_bulk(selected)
    for pair in contenders_by_round:
        for round_ in range(repeat):
            names = list(pair) if round_ % 2 == 0 else list(pair)[::-1]
            for name in names:
                reset()
                say(f"m: {name}, run {round_ + 1} of {repeat}")
                entry["runs"][name].append(pair[name]())
                say(f"     {entry['runs'][name][-1]:.2f} s")
    entry["medians"] = {name: statistics.median(v) for name, v in entry["runs"].items()}
    return result


def reads() -> dict:
    from tests.perf.reads import measure_lists

    return {"reads": measure_lists(say, section="m")}


def child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.perf.sqlite")
    parser.add_argument("step", choices=["reads", "bulk"])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    from tests.perf.child import setup_django

    settings = setup_django()
    from django.db import connection

    if connection.vendor != "sqlite":
        print("This child measures SQLite: unset DATABASE_URL.", file=sys.stderr)
        return 2
    # As the rest of the benchmark: no mail on the console.
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    steps = {"reads": reads, "bulk": lambda: bulk(args.size, args.repeat)}
    print(json.dumps({"engine": engine(), **steps[args.step]()}, default=str))
    return 0


# --- the report -------------------------------------------------------------------


def rows(m: dict) -> list[tuple[str, str, str]]:
    from contacts.status.sql import STATUS_RANGE_BATCH
    from tests.perf.reads import P50_BAR, P95_BAR
    from tests.perf.reads import rows as read_rows

    e = m["engine"]
    seeds = {int(k): v for k, v in m["seed_seconds"].items()}
    out = [
        (
            f"m. SQLite {e['version']}, journal_mode={e['journal_mode']}, "
            f"synchronous={e['synchronous']}: `manage.py migrate` of an empty file",
            f"{m['migrate_seconds']:.1f} s",
            "each step in a fresh process without DATABASE_URL, on a temporary file; the "
            f"lists below are held to PostgreSQL's bar for reference (p50 ≤ {P50_BAR:.0f} ms, "
            f"p95 ≤ {P95_BAR:.0f} ms); the search indexes are PostgreSQL's: on SQLite both the "
            "lists and their naive baseline search without one. SQLite runs inside the "
            "process, so its CPU time is the request's whole work: the rest of the wall "
            "time is waiting for a CPU",
        ),
        *(
            (
                f"m. `manage.py seed_demo --contacts {count:,}`"
                + (" (what `make run` loads)" if count == 5_000 else ""),
                f"{seconds:.1f} s",
                "the whole command, process start to exit"
                + (f"; the file: {m['demo_file_mb']:,.0f} MB" if count == m["contacts"] else ""),
            )
            for count, seconds in sorted(seeds.items())
        ),
    ]
    out += read_rows(
        m["reads"],
        prefix="m. SQLite",
        verdicts=("within PostgreSQL's bar", "over PostgreSQL's bar"),
        naive_label="exact counts",
        # SQLite works inside this process: the CPU time is all of the request's work.
        split="median CPU {cpu:.0f} ms (Python and SQLite; {db:.0f} ms executing statements)",
    )
    b = m["bulk"]
    runs = {k: ", ".join(f"{s:.2f}" for s in v) for k, v in b["runs"].items()}
    med = b["medians"]
    out.append(
        (
            f"m. SQLite: set up {b['table']:,} non-marketing contacts (one recursive-CTE "
            "INSERT … SELECT)",
            f"{b['setup_seconds']:.1f} s",
            "",
        )
    )
    for service, hand, what in (
        ("service", "handwritten", "to marketing (`contacts_set_marketing`)"),
        (
            "service_non",
            "handwritten_non",
            "set non-marketing (`contacts_set_non_marketing`: deferred to the period's end)",
        ),
    ):
        out += [
            (
                f"m. SQLite service: {b['size']:,} contacts {what}, {b['label']} of {b['table']:,}",
                f"{med[service]:.2f} s",
                f"median of {runs[service]}; {b['chunks']} chunk(s) of "
                f"{STATUS_RANGE_BATCH:,} ids, three statements each",
            ),
            (
                "m. SQLite hand-written SQL, the same contacts (INSERT … SELECT into the "
                "ledger, UPDATE, counter UPDATE)",
                f"{med[hand]:.2f} s",
                f"median of {runs[hand]}",
            ),
            (
                "m. SQLite service ÷ hand-written",
                f"{med[service] / med[hand]:.2f}×",
                "no bar on SQLite (PostgreSQL's: b ÷ c)",
            ),
        ]
    return out


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
