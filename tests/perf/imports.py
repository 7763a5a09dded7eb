"""g. CSV import: `import_contacts` on a 1,000,000-row CSV of new contacts (the bars:
at least 0.87 × the rate of a hand-written COPY + INSERT … SELECT of the same file on
PostgreSQL, memory flat in the file's size).

Each size (100,000 and 1,000,000 rows) runs in a fresh child process
(`python -m tests.perf.imports_child`), so its peak RSS (resource.getrusage) is that
import's alone: the contacts tables are emptied, the CSV (written once, untimed) is
uploaded, previewed, committed and run exactly as the command does. The rate is the
job's (`contact_import_run`: the rows staged, then the upsert). On PostgreSQL the preview
reads the file, checks every row and stages the good ones (contacts/imports/kept.py), and
the run upserts from those rows; the preview is timed apart, and the whole import a user
waits for (preview + run) has a row of its own beside the hand-written load. The naive
baseline is `contact_create` once per row over a sample, extrapolated to the file's size.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path

from django.conf import settings

SIZES = (100_000, 1_000_000)
STAGES = ["Subscriber", "Lead", "Marketing Qualified Lead", "Sales Qualified Lead", "Customer"]
HEADER = "Email,First Name,Last Name,Company,Phone Number,Lifecycle Stage\n"


def csv_path(count: int) -> Path:
    return Path(settings.BASE_DIR) / "media" / "bench" / f"contacts-{count}.csv"


def write_csv(count: int, prefix: str = "import") -> Path:
    """`count` new contacts (untimed), written once and reused."""
    path = csv_path(count)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(count)
    firsts = ["Ann", "Bob", "Chloé", "Dan", "Eve", "Fatima", "Gao", "Hugo", "Ines", "José"]
    lasts = ["Smith", "Müller", "Okafor", "Nakamura", "García", "Dubois", "Rossi", "Kowalski"]
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        batch = []
        for g in range(1, count + 1):
            batch.append(
                f"{prefix}{g}@bench-import.example,{rng.choice(firsts)},{rng.choice(lasts)},"
                f'"Company {g % 5003}, Inc.",+1 555 {g % 10_000:04d},{STAGES[g % 5]}\n'
            )
            if len(batch) == 10_000:
                out.write("".join(batch))
                batch = []
        out.write("".join(batch))
    return path


def empty_tables() -> None:
    from contacts.imports.models import ContactImport
    from tests.perf.data import CONTACT, LEDGER, REQUEST, STATE, USAGE, execute

    execute(
        f"TRUNCATE {CONTACT}, {LEDGER}, {REQUEST}, {USAGE}, {STATE}, "
        f"{ContactImport._meta.db_table} RESTART IDENTITY CASCADE"
    )
    execute(f"VACUUM ANALYZE {CONTACT}", "CHECKPOINT")


def import_in_this_process(path: Path, keep: bool = False) -> dict:
    """What the command does, timed by phase; returns the timings, counts and peak RSS.
    Into empty tables, or with `keep`, into the contacts already there."""
    import resource

    from django.core.files import File

    from contacts.imports.services import (
        contact_import_commit,
        contact_import_create,
        contact_import_preview,
        contact_import_run,
    )

    if not keep:
        empty_tables()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    phases: dict[str, float] = {}
    started = time.perf_counter()
    with open(path, "rb") as handle:
        contact_import = contact_import_create(file=File(handle), file_name=path.name)
    upload = time.perf_counter() - started
    started = time.perf_counter()
    contact_import = contact_import_preview(contact_import=contact_import)
    preview = time.perf_counter() - started
    contact_import_commit(contact_import=contact_import, enqueue=False)

    def progress(phase: str, done: int, total: int) -> None:
        phases.setdefault(phase, time.perf_counter())

    started = time.perf_counter()
    contact_import = contact_import_run(contact_import_id=contact_import.pk, progress=progress)
    seconds = time.perf_counter() - started
    marks = sorted(phases.items(), key=lambda item: item[1])
    split = {
        name: (marks[i + 1][1] if i + 1 < len(marks) else started + seconds) - at
        for i, (name, at) in enumerate(marks)
    }
    return {
        "rows": contact_import.rows,
        "status": contact_import.status,
        "created": contact_import.created_count,
        "upload_seconds": upload,
        "preview_seconds": preview,
        "run_seconds": seconds,
        "phases": split,
        "maxrss_before_mb": rss_before / 1024,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def in_child(path: Path, keep: bool = False) -> dict:
    from tests.perf.child import run_module

    return run_module(
        "tests.perf.imports_child", str(path), *(["keep"] if keep else []), what="the import run"
    )


def naive_baseline(sample: int) -> float:
    """Seconds per row of `contact_create` once per row (the obvious loop)."""
    from contacts.imports.parsing import import_source_default
    from contacts.services import contact_create

    empty_tables()
    source = import_source_default()
    started = time.perf_counter()
    for g in range(sample):
        contact_create(
            email=f"naive{g}@bench-import.example",
            source=source,
            first_name="Ann",
            last_name="Smith",
            company=f"Company {g}",
            phone="+1 555 0000",
            lifecycle_stage="lead",
        )
    return (time.perf_counter() - started) / sample


def handwritten(path: Path) -> float:
    """The floor: what psql would do by hand — the server parses the CSV (COPY … CSV HEADER
    into a temporary table) and one INSERT … SELECT … ON CONFLICT DO NOTHING loads it. No
    validation, no row errors, no dedupe report, no progress."""
    from django.db import connection

    from contacts.imports.parsing import import_source_default
    from contacts.imports.services import _UPSERT_COLUMNS

    empty_tables()
    source = import_source_default()
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_raw")
        cursor.execute(
            "CREATE TEMPORARY TABLE bench_raw (email text, first_name text, last_name text, "
            "company text, phone text, stage text)"
        )
        with (
            open(path, "rb") as handle,
            cursor.cursor.copy("COPY bench_raw FROM STDIN WITH (FORMAT csv, HEADER true)") as copy,
        ):
            while chunk := handle.read(1 << 20):
                copy.write(chunk)
        cursor.execute(
            f"INSERT INTO contacts_contact ({_UPSERT_COLUMNS}) "
            "SELECT now(), now(), lower(trim(email)), first_name, last_name, company, phone, "
            "'lead', '', 'prospect', false, false, 0, NULL, %s, 'non_marketing', NULL, "
            "'import', %s, %s, NULL FROM bench_raw ON CONFLICT (email) DO NOTHING",
            # Every new contact records its reason, as the import's do (the same work).
            [source.pk, "1", path.name],
        )
        cursor.execute("DROP TABLE bench_raw")
    return time.perf_counter() - started


def explain_upsert(path: Path) -> str:
    """The first upsert statement's plan on a 100,000-row file (EXPLAIN ANALYZE, rolled back)."""
    from django.core.files import File
    from django.db import connection, transaction

    from contacts.imports import services, staging

    empty_tables()
    with open(path, "rb") as handle:
        contact_import = services.contact_import_create(file=File(handle), file_name=path.name)
    with transaction.atomic():
        staging._stage(contact_import, None)
        with connection.cursor() as cursor:
            cursor.execute(
                "EXPLAIN (ANALYZE, BUFFERS) " + services._upsert_sql(),
                {
                    **services._upsert_params(
                        contact_import,
                        services.import_creation_decision(contact_import).status_source,
                        contact_import.created_at,
                    ),
                    "lo": None,
                    "hi": None,
                },
            )
            plan = "\n".join(row[0] for row in cursor.fetchall())
        transaction.set_rollback(True)
    return plan


def run(options, say) -> dict:
    """Each size's import and the hand-written load of the same file alternate: one round
    at 100,000 rows, `--repeat` rounds at 1,000,000, the medians compared."""
    results: dict = {"sizes": {}}
    for size in SIZES:
        say(f"g: writing a {size:,}-row CSV (untimed)")
        path = write_csv(size)
        rounds = max(1, options.repeat) if size == SIZES[-1] else 1
        runs, hands = [], []
        for round_ in range(rounds):
            say(f"g: importing {size:,} rows in a fresh process, round {round_ + 1} of {rounds}")
            runs.append(measured := in_child(path))
            say(
                f"     run {measured['run_seconds']:.1f} s "
                f"({size / measured['run_seconds']:,.0f} rows/s), preview "
                f"{measured['preview_seconds']:.1f} s, peak RSS {measured['maxrss_mb']:.0f} MB"
            )
            say(f"g: hand-written COPY + INSERT … SELECT of the {size:,} rows")
            hands.append(seconds := handwritten(path))
            say(f"     {seconds:.1f} s ({size / seconds:,.0f} rows/s)")
        runs.sort(key=lambda m: m["run_seconds"])
        results["sizes"][size] = {
            **runs[len(runs) // 2],  # the median run, with its phases
            "runs": [m["run_seconds"] for m in runs],
            "maxrss_mb": max(m["maxrss_mb"] for m in runs),
            "handwritten_seconds": statistics.median(hands),
            "handwritten_runs": sorted(hands),
        }
    sample = min(options.loop, 2_000)
    say(f"g: naive baseline, contact_create × {sample:,}")
    results["naive_per_row"] = naive_baseline(sample)
    results["naive_sample"] = sample
    say("g: plan of one upsert statement")
    results["plan_upsert"] = explain_upsert(csv_path(SIZES[0]))
    empty_tables()
    return results
