"""h. Exporting contacts as CSV with flat memory.

`python -m tests.perf.run --only export` (PostgreSQL). With 1,000,000 contacts (the
benchmark's table, filled with INSERT … SELECT if it has another size):

- the service — `contacts_export_csv` (keyset chunks of EXPORT_CHUNK_SIZE by id) — exports
  the first 100,000 and then all 1,000,000 contacts, each in a FRESH child process, to
  /dev/null: rows/s and the child's peak RSS (the bar: peak RSS at 1M ÷ at 100k ≤ ~1.2);
- the naive baseline, also in a fresh child: `csv.writer` over
  `list(Contact.objects.select_related("source")…)` for the first 100,000 — its rows/s and
  its peak RSS, which grows with the rows it holds.

Each child reports its peak RSS before the export (Django loaded, connected) and after,
so the growth is the export's own. Times include formatting each cell (formula-safe text,
ISO dates) in Python.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

from django.db.models import Count, Max

SMALL = 100_000


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def export_service(limit: int) -> int:
    from contacts.imports.export import contacts_export_csv
    from contacts.models import Contact

    rows = 0
    with open(os.devnull, "w", newline="") as sink:
        for piece in contacts_export_csv(
            contacts=Contact.objects.select_related("source").filter(pk__lte=limit)
        ):
            sink.write(piece)
            rows += piece.count("\n")
    return rows - 1  # the header


def export_naive(limit: int) -> int:
    """What one writes first: every contact into a list, then csv.writer over it."""
    import csv

    from contacts.imports.export import EXPORT_HEADER
    from contacts.models import Contact

    contacts = list(Contact.objects.select_related("source").filter(pk__lte=limit).order_by("pk"))
    with open(os.devnull, "w", newline="") as sink:
        writer = csv.writer(sink)
        writer.writerow(EXPORT_HEADER)
        for c in contacts:
            writer.writerow(
                [
                    c.pk,
                    c.email,
                    c.first_name,
                    c.last_name,
                    c.company,
                    c.phone,
                    c.lifecycle_stage,
                    c.lead_status,
                    c.contact_type,
                    c.unsubscribed,
                    c.hard_bounced,
                    c.lead_score,
                    c.last_engaged_at,
                    c.source.name,
                    c.marketing_status,
                    c.marketing_until,
                    c.marketing_reason_type,
                    c.marketing_reason_id,
                    c.marketing_reason_name,
                    c.created_at,
                ]
            )
    return len(contacts)


def child_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["service", "naive"], required=True)
    parser.add_argument("--limit", type=int, required=True)
    args = parser.parse_args(argv)
    from tests.perf.child import setup_django

    setup_django()
    from django.db import connection

    connection.ensure_connection()
    before = _peak_rss_mb()
    started = time.perf_counter()
    rows = (export_service if args.mode == "service" else export_naive)(args.limit)
    seconds = time.perf_counter() - started
    after = _peak_rss_mb()
    print(
        json.dumps(
            {
                "mode": args.mode,
                "rows": rows,
                "seconds": seconds,
                "rows_per_second": rows / seconds if seconds else 0.0,
                "peak_rss_before_mb": before,
                "peak_rss_mb": after,
                "rss_growth_mb": after - before,
            }
        )
    )
    return 0


def in_child(mode: str, limit: int) -> dict:
    from tests.perf.child import run_module

    return run_module(
        "tests.perf.exports",
        *["--mode", mode, "--limit", str(limit)],
        what=f"the {mode} export child",
    )


def run(options, say) -> dict:
    from contacts.imports.export import EXPORT_CHUNK_SIZE
    from contacts.models import Contact
    from tests.perf import data

    count = options.contacts
    bounds = Contact.objects.aggregate(n=Count("pk"), hi=Max("pk"))
    if (bounds["n"], bounds["hi"]) != (count, count):
        say(f"h: setting up {count:,} contacts (untimed)")
        data.fill(count)
    data.checkpoint()
    small = min(SMALL, count)
    result: dict = {"contacts": count, "small": small, "chunk": EXPORT_CHUNK_SIZE}
    # One untimed pass warms the cache for everyone (the table is read in id order).
    say("h: warm-up pass (untimed)")
    in_child("service", count)
    for key, mode, limit in (
        ("service_small", "service", small),
        ("service_large", "service", count),
        ("naive_small", "naive", small),
    ):
        say(f"h: {mode} export of {limit:,} contacts, fresh process")
        result[key] = in_child(mode, limit)
        say(
            f"     {result[key]['seconds']:.1f} s, {result[key]['rows_per_second']:,.0f} rows/s, "
            f"peak RSS {result[key]['peak_rss_mb']:.0f} MB"
        )
    result["rss_ratio"] = (
        result["service_large"]["peak_rss_mb"] / result["service_small"]["peak_rss_mb"]
    )
    return result


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
