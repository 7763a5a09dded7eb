"""Run the enabled workflows now (or one, even disabled, with --workflow), or preview them.

    python manage.py run_workflows [--workflow ID] [--dry-run]

Each run is recorded like an admin or scheduled run (trigger "command"). A held run (past
its limit or billing's guardrails) or a failed one makes the command exit non-zero with a
sentence saying which and why; --dry-run writes nothing and prints each preview.
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from workflows.models import RunStatus, RunTrigger, Workflow
from workflows.runs import workflow_run_now
from workflows.services import workflow_preview


class Command(BaseCommand):
    help = "Run the enabled workflows now (or --workflow ID), or preview them with --dry-run."

    def add_arguments(self, parser):
        parser.add_argument("--workflow", type=int, help="Only this workflow (enabled or not).")
        parser.add_argument(
            "--dry-run", action="store_true", help="Preview only: counts and cost, nothing written."
        )

    def handle(self, *args, workflow=None, dry_run=False, **options):
        if workflow is not None:
            workflows = list(Workflow.objects.filter(pk=workflow))
            if not workflows:
                raise CommandError(f"There is no workflow #{workflow}.")
        else:
            workflows = list(Workflow.objects.filter(enabled=True).order_by("id"))
        if not workflows:
            self.stdout.write("No enabled workflow.")
            return
        problems = []
        for item in workflows:
            if dry_run:
                preview = workflow_preview(workflow=item)
                cost = preview.cost or {}
                self.stdout.write(
                    f"#{item.pk} {item.name}: {preview.matched:,} match, {preview.would_enroll:,} "
                    f"would enroll, {preview.refused_excluded:,} refused (exclusion), "
                    f"{preview.would_become_marketing:,} would become marketing"
                    + (f", invoice change {cost.get('invoice_delta', 0):,}" if cost else "")
                    + (
                        f"; would wait: {'; '.join(preview.hold_reasons)}"
                        if preview.hold_reasons
                        else ""
                    )
                )
                continue
            with tqdm(total=1, desc=item.name[:30], unit=" chunk", file=sys.stderr) as bar:

                def progress(done: int, total: int, bar=bar) -> None:
                    bar.total = total
                    bar.n = done
                    bar.refresh()

                run = workflow_run_now(workflow=item, trigger=RunTrigger.COMMAND, progress=progress)
            self.stdout.write(
                f"#{item.pk} {item.name}: run #{run.pk} {run.status}: {run.matched:,} matched, "
                f"{run.enrolled:,} enrolled, {run.changed:,} changed, {run.refused:,} refused."
            )
            if run.status == RunStatus.HELD:
                problems.append(f"run #{run.pk} of “{item.name}” is held: {run.hold_reason}")
            elif run.status == RunStatus.FAILED:
                problems.append(f"run #{run.pk} of “{item.name}” failed: {run.error}")
        if problems:
            raise CommandError(
                "Not every workflow ran: "
                + "; ".join(problems)
                + ". Rerun after fixing or approving."
            )
