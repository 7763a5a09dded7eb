"""`manage.py import_contacts FILE --source NAME|ID [--format csv|hubspot] [--marketing]
[--map "Col=field" …] [--dry-run]`
`manage.py import_contacts --resume ID`

Imports a CSV the way the admin does: the file is stored as a `ContactImport`, its
columns are mapped (by their names, then `--map`), the preview is printed, and the
import runs here, in this process, with a progress bar. `--dry-run` prints the preview
and keeps nothing. Bad input (missing file, too big, not UTF-8, no email column, an
unknown field, a marketing import without the permission for `--user`) exits non-zero
with one sentence saying why. `--resume ID` finishes a failed import here (its worker
died, or its job was never queued): it goes on where it stopped, saving nothing twice.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.files import File
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from contacts.imports.models import ImportFormat, ImportStatus
from contacts.imports.parsing import import_check_size
from contacts.imports.selectors import contact_import_list
from contacts.imports.services import (
    contact_import_commit,
    contact_import_create,
    contact_import_discard,
    contact_import_preview,
    contact_import_resume,
    contact_import_run,
)
from contacts.models import (
    Source,
    SourceKind,
)
from contacts.status.results import StatusError
from crm.rows import row_get_or_create

PHASES = {"reading": "Reading the file", "saving": "Saving contacts", "marketing": "Marketing"}


class Command(BaseCommand):
    help = "Import contacts from a CSV file (upsert by email; see the module's docstring)."

    def add_arguments(self, parser):
        parser.add_argument(
            "file", nargs="?", help="the CSV file (UTF-8, comma or semicolon separated)"
        )
        parser.add_argument(
            "--resume",
            type=int,
            metavar="ID",
            help="resume the failed import ID in this process (instead of a new import)",
        )
        parser.add_argument(
            "--source",
            help="the import source of new contacts: its id or name (a new name creates an "
            "Import source)",
        )
        parser.add_argument(
            "--format",
            choices=ImportFormat.values,
            help="hubspot: HubSpot's contacts export (mapped by HubSpot's column names, each "
            "contact's marketing status kept); default: detected from the header",
        )
        parser.add_argument(
            "--marketing",
            action="store_true",
            help="set all contacts in this import as marketing (billing guardrails apply)",
        )
        parser.add_argument(
            "--map",
            action="append",
            default=[],
            metavar="COLUMN=FIELD",
            help='map a column to a field, e.g. --map "E-mail 2=email" (FIELD empty: ignore)',
        )
        parser.add_argument("--dry-run", action="store_true", help="preview only; keep nothing")
        parser.add_argument(
            "--user", help="act as this user (their permissions apply; recorded on the import)"
        )

    def handle(self, *args, **options):
        actor = self.user(options.get("user"))
        if options["resume"] is not None:
            self.resume(options["resume"], actor)
            return
        if not options["file"] or not options["source"]:
            raise CommandError("Give the CSV file and --source (or --resume ID).")
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"There is no file {path}.")
        mapping = self.parse_map(options["map"])
        source = self.source(options["source"])
        try:
            import_check_size(path.stat().st_size)
            with open(path, "rb") as handle:
                contact_import = contact_import_create(
                    file=File(handle, name=path.name),
                    file_name=path.name,
                    actor=actor,
                    source=source,
                    mapping=mapping,
                    marketing=options["marketing"],
                    file_format=options.get("format"),
                )
        except StatusError as error:
            raise CommandError(str(error)) from error
        try:
            contact_import = contact_import_preview(contact_import=contact_import, actor=actor)
        except StatusError as error:
            contact_import_discard(contact_import=contact_import)
            raise CommandError(str(error)) from error
        self.print_preview(contact_import)
        if options["dry_run"]:
            contact_import_discard(contact_import=contact_import)
            self.stdout.write("Dry run: nothing was imported.")
            return
        contact_import_commit(contact_import=contact_import, actor=actor, enqueue=False)
        self.run_import(contact_import)

    def resume(self, pk: int, actor) -> None:
        contact_import = contact_import_list().filter(pk=pk).first()
        if contact_import is None:
            raise CommandError(f"There is no import #{pk}.")
        try:
            contact_import_resume(contact_import=contact_import, actor=actor, enqueue=False)
        except StatusError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"Resuming import #{pk}: {contact_import.file_name}")
        self.run_import(contact_import)

    def run_import(self, contact_import) -> None:
        """Run the committed import here, with a progress bar per phase."""
        bars: dict[str, tqdm] = {}

        def progress(phase: str, done: int, total: int) -> None:
            bar = bars.get(phase)
            if bar is None:
                for other in bars.values():
                    other.close()
                bar = bars[phase] = tqdm(
                    total=total, desc=PHASES.get(phase, phase), unit=" rows", file=sys.stderr
                )
            bar.total = total
            bar.update(done - bar.n)

        contact_import = contact_import_run(contact_import_id=contact_import.pk, progress=progress)
        for bar in bars.values():
            bar.close()
        self.print_result(contact_import)
        if contact_import.status == ImportStatus.FAILED:
            raise CommandError(contact_import.message)

    def parse_map(self, pairs: list[str]) -> dict[str, str]:
        mapping = {}
        for pair in pairs:
            if "=" not in pair:
                raise CommandError(f'--map takes "Column=field"; “{pair}” has no "=".')
            column, name = pair.rsplit("=", 1)
            mapping[column.strip()] = name.strip()
        return mapping

    def user(self, username: str | None):
        if not username:
            return None
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"There is no user “{username}”.")
        return user

    def source(self, value: str) -> Source:
        source = Source.objects.filter(pk=int(value)).first() if value.isdigit() else None
        if source is None and value.isdigit():
            source = Source.objects.filter(name=value).first()
            if source is None:
                raise CommandError(f"There is no source with the id {value}.")
        if source is None:
            source, created = row_get_or_create(
                Source,
                lookup={"name": value},
                defaults={"kind": SourceKind.IMPORT, "default_marketing": False},
            )
            if created:
                self.stdout.write(f"Created the import source “{value}”.")
        if source.kind != SourceKind.IMPORT:
            raise CommandError(
                f"The source “{source.name}” is a {source.get_kind_display()} source; give an "
                "Import source (or a new name)."
            )
        return source

    def print_preview(self, contact_import) -> None:
        p = contact_import.preview
        mapped = ", ".join(f"{c} → {f}" for c, f in contact_import.mapping.items() if f)
        lines = [
            f"Import #{contact_import.pk}: {contact_import.file_name} ({mapped})",
            f"  rows {p['rows']:,}: new {p['new']:,}, updated {p['updated']:,}, "
            f"unchanged {p['unchanged']:,}, invalid {p['invalid']:,}, "
            f"duplicates {p['duplicates']:,}",
            f"  become marketing: {p['becomes_marketing']:,}",
        ]
        if statuses := p.get("file_statuses"):
            lines.append(
                f"  a HubSpot export, its statuses kept: {statuses['marketing']:,} marketing, "
                f"{statuses['pending']:,} set to non-marketing at the next update "
                f"({statuses['would_schedule']:,} downgrades to schedule), "
                f"{statuses['non_marketing'] + statuses['unset']:,} non-marketing"
            )
        lines += [f"  {note}" for note in p.get("notes") or ()]
        cost = (p.get("status_preview", {}).get("extra") or {}).get("cost")
        if (contact_import.marketing or statuses) and cost:
            lines.append(
                f"  billing: peak {cost['peak_before']:,} → {cost['peak_after']:,}, invoice "
                f"{cost['total_before'] / 100:,.2f} → {cost['total_after'] / 100:,.2f} "
                f"{cost['currency']}"
                + (
                    f"; will wait for approval: {cost['hold_reason']}"
                    if cost.get("hold_reason")
                    else ""
                )
            )
        if p.get("same_file"):
            lines.append(
                "  this exact file was imported before (#"
                + ", #".join(map(str, p["same_file"]))
                + "): only what differs changes"
            )
        self.stdout.write("\n".join(lines))

    def print_result(self, contact_import) -> None:
        c = contact_import
        text = (
            f"Import #{c.pk} {c.get_status_display().lower()}: {c.created_count:,} created, "
            f"{c.updated_count:,} updated, {c.unchanged_count:,} unchanged, "
            f"{c.invalid_count:,} invalid, {c.duplicate_count:,} duplicates, "
            f"{c.marketing_count:,} became marketing. Rows read: {c.rows:,} = "
            f"{c.imported_count:,} imported + {c.reported_count:,} reported."
        )
        if c.status == ImportStatus.FAILED:
            return
        self.stdout.write(self.style.SUCCESS(text) if c.status == ImportStatus.DONE else text)
        if c.message:
            self.stdout.write(c.message)
        if c.invalid_count or c.duplicate_count:
            self.stdout.write(
                f"Row errors: the admin's import page, or GET /api/imports/{c.pk}/errors/."
            )
