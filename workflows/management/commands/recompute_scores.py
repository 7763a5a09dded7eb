"""`manage.py recompute_scores [--contacts-since DATE] [--dry-run] [--no-progress]`.

Rebuilds lead scores from the engagement events and the enabled scoring rules
(workflows.scoring.scores_recompute: set-based, one chunk of contact ids a transaction),
as the daily task does. `--contacts-since` limits it to contacts engaged on or after DATE
(ISO 8601 date or date-time; UTC without an offset). `--dry-run` counts the scores that
would change and writes nothing. A progress bar goes to stderr.
"""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_date, parse_datetime
from tqdm import tqdm

from crm.instants import InstantOutOfRange, instant_utc
from workflows.scoring import scores_recompute


def parse_since(value: str) -> dt.datetime:
    try:
        parsed = parse_datetime(value)
        if parsed is None and (day := parse_date(value)) is not None:
            parsed = dt.datetime.combine(day, dt.time.min)
    except ValueError:
        parsed = None
    if parsed is None:
        raise CommandError(f"--contacts-since {value!r}: expected a date such as 2026-01-31.")
    try:
        return instant_utc(parsed)
    except InstantOutOfRange as error:
        raise CommandError(f"--contacts-since: {error}") from None


class Command(BaseCommand):
    help = "Recompute every contact's lead score from its engagement events and the rules."

    def add_arguments(self, parser):
        parser.add_argument(
            "--contacts-since",
            metavar="DATE",
            help="only contacts engaged on or after DATE (their last_engaged_at)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="count the changes, write nothing"
        )
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(self, *args, contacts_since, dry_run, no_progress, **options):
        since = parse_since(contacts_since) if contacts_since else None
        bar = None

        def progress(done: int, total: int) -> None:
            nonlocal bar
            if no_progress:
                return
            if bar is None:
                bar = tqdm(total=total, unit="ids", unit_scale=True, desc="contacts")
            bar.update(done - bar.n)

        result = scores_recompute(contacts_since=since, dry_run=dry_run, progress=progress)
        if bar is not None:
            bar.close()
        if not result.rules:
            self.stdout.write("No enabled scoring rule: scoring is off, no score was touched.")
            return
        verb = "would change" if dry_run else "changed"
        self.stdout.write(
            f"{result.changed:,} lead scores {verb} ({result.rules} rules, "
            f"{result.chunks} chunks, {result.seconds:.1f} s)."
        )
