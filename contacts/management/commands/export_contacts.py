"""`manage.py export_contacts [--output FILE|-] [--filter key=value ...]`: contacts as CSV.

The same columns and formula-safe cells as the admin and API exports
(contacts.selectors.contacts_export_rows), streamed chunk by chunk, so memory stays flat
whatever the number of contacts. Filters are the contacts API's (ContactFilter), checked
strictly: an unknown key or a bad value stops the command before anything is written.
Writing to a file shows a progress bar on stderr; `-` (the default) writes to stdout.
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError
from django.db.models.functions import Now
from django.utils import timezone
from tqdm import tqdm

from contacts.filters import ContactFilter
from contacts.imports.export import contacts_export_csv
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
            for piece in contacts_export_csv(contacts=queryset, at=now):
                self.stdout.write(piece, ending="")
            return
        try:
            handle = open(output, "w", newline="", encoding="utf-8")  # noqa: SIM115
        except OSError as error:
            raise CommandError(f"Cannot write {output}: {error}") from error
        total = queryset.order_by().count()
        with handle, tqdm(total=total, unit=" contacts", file=sys.stderr) as bar:
            for piece in contacts_export_csv(contacts=queryset, at=now, progress=bar.update):
                handle.write(piece)
            written = bar.n
        self.stderr.write(f"Wrote {written:,} contacts to {output}.")
