"""`manage.py export_contacts [--output FILE|-] [--filter key=value ...]`: contacts as CSV.

The same columns and formula-safe cells as the admin and API exports
(contacts.selectors.contacts_export_rows), streamed chunk by chunk, so memory stays flat
whatever the number of contacts. Filters are the contacts API's (ContactFilter), checked
strictly: an unknown key or a bad value stops the command before anything is written.
Writing to a file shows a progress bar on stderr; `-` (the default) writes to stdout.
A file is written beside the target and renamed when complete: an export an error stops
leaves no file; on stdout it ends with the export's "incomplete" line and a non-zero exit.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db.models.functions import Now
from django.utils import timezone
from tqdm import tqdm

from contacts.filters import ContactFilter
from contacts.imports.export import contacts_export_csv, export_marked_incomplete
from contacts.selectors import contact_list


def parse_filters(pairs: list[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    known = ContactFilter.base_filters
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--filter {pair!r}: expected key=value, e.g. lifecycle_stage=lead.")
        if key not in known:
            raise CommandError(f"--filter {key!r}: unknown filter. Known: {', '.join(known)}.")
        params[key] = value
    return params


class Command(BaseCommand):
    help = "Export contacts as CSV (streamed; formula-safe cells)."

    def add_arguments(self, parser):
        parser.add_argument("--output", "-o", default="-", help="a file path, or - for stdout")
        parser.add_argument(
            "--filter",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="a contacts API filter, e.g. --filter lifecycle_stage=lead (repeatable)",
        )

    def handle(self, *args, output: str, filter: list[str], **options):
        params = parse_filters(filter)
        filterset = ContactFilter(data=params, queryset=contact_list(), now=Now())
        if not filterset.is_valid():
            problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in filterset.errors.items())
            raise CommandError(f"Invalid filter: {problems}")
        queryset = filterset.qs
        now = timezone.now()
        if output == "-":
            pieces = contacts_export_csv(contacts=queryset, at=now)
            for piece in export_marked_incomplete(pieces):
                self.stdout.write(piece, ending="")
            return
        # Written beside the target and renamed at the end: an export an error stops
        # leaves no file that could pass for a complete one (nor spoils an older one).
        target = Path(output)
        partial = target.with_name(f".{target.name}.partial")
        try:
            handle = open(partial, "w", newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as error:
            raise CommandError(f"Cannot write {output}: {error}") from error
        total = queryset.order_by().count()
        try:
            with handle, tqdm(total=total, unit=" contacts", file=sys.stderr) as bar:
                for piece in contacts_export_csv(contacts=queryset, at=now, progress=bar.update):
                    handle.write(piece)
                written = bar.n
        except Exception as error:
            partial.unlink(missing_ok=True)
            raise CommandError(
                f"The export stopped on an error ({error.__class__.__name__}: {error}); "
                f"{output} was not written."
            ) from error
        os.replace(partial, target)
        self.stderr.write(f"Wrote {written:,} contacts to {output}.")
