"""Run the enabled workflows now (or one, even disabled, with --workflow), or preview them.

    python manage.py run_workflows [--workflow ID] [--dry-run]
    python manage.py run_workflows --resume RUN_ID

Each run is recorded like an admin or scheduled run (trigger "command"). A held run (past
its limit or billing's guardrails) or a failed one makes the command exit non-zero with a
sentence saying which and why; --dry-run writes nothing and prints each preview.
--resume finishes a failed run here (its worker died, it stopped on an error, or it was
never queued), from its cursor: nothing is done twice.
"""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from workflows.models import RunStatus, RunTrigger, Workflow, WorkflowRun
from workflows.runs import workflow_run_execute, workflow_run_now, workflow_run_resume
from workflows.services import WorkflowError, workflow_preview


class Command(BaseCommand):
    help = "Run the enabled workflows now (or --workflow ID), or preview them with --dry-run."

    def add_arguments(self, parser):
        parser.add_argument("--workflow", type=int, help="Only this workflow (enabled or not).")
        parser.add_argument(
            "--dry-run", action="store_true", help="Preview only: counts and cost, nothing written."
        )
        parser.add_argument(
            "--resume", type=int, metavar="RUN_ID", help="Resume this failed run, here."
        )

    def handle(self, *args, workflow=None, dry_run=False, resume=None, **options):
        if resume is not None:
            self.resume(resume)
            return
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
            run = self.with_progress(
                item,
                lambda progress, item=item: workflow_run_now(
                    workflow=item, trigger=RunTrigger.COMMAND, progress=progress
                ),
            )
            problems += self.report(item, run)
        if problems:
            raise CommandError(
                "Not every workflow ran: "
                + "; ".join(problems)
                + ". Rerun after fixing or approving."
            )

    def with_progress(self, workflow, execute):
        with tqdm(total=1, desc=workflow.name[:30], unit=" chunk", file=sys.stderr) as bar:

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.n = done
                bar.refresh()

            return execute(progress)

    def report(self, workflow, run) -> list[str]:
        """Print the run's counts; return what went wrong with it (nothing when done)."""
        self.stdout.write(
            f"#{workflow.pk} {workflow.name}: run #{run.pk} {run.status}: {run.matched:,} "
            f"matched, {run.enrolled:,} enrolled, {run.changed:,} changed, {run.refused:,} "
            "refused."
        )
        if run.status == RunStatus.HELD:
            return [f"run #{run.pk} of “{workflow.name}” is held: {run.hold_reason}"]
        if run.status == RunStatus.FAILED:
            return [f"run #{run.pk} of “{workflow.name}” failed: {run.error}"]
        return []

    def resume(self, pk: int) -> None:
        run = WorkflowRun.objects.select_related("workflow").filter(pk=pk).first()
        if run is None:
            raise CommandError(f"There is no workflow run #{pk}.")
        try:
            run = workflow_run_resume(run=run, enqueue=False)
        except WorkflowError as error:
            raise CommandError(str(error)) from error
        run = self.with_progress(
            run.workflow, lambda progress: workflow_run_execute(run=run, progress=progress)
        )
        problems = self.report(run.workflow, run)
        if problems:
            raise CommandError("The run did not finish: " + "; ".join(problems) + ".")
