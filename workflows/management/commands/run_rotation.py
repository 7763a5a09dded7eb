"""`manage.py run_rotation [--plan ID] [--dry-run]`: the rotation steps due now.

The same service as the hourly beat task (`workflows.run_rotation_plans`): each enabled
plan (or the one named, enabled or not) promotes into its free slots once the current
period's rollover has run, and schedules its lowest-ranked members non-marketing within
its lead time before the update date. Each step runs once per update date, so a rerun
changes nothing. `--dry-run` shows what would happen and writes nothing.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from crm.text import counted
from workflows.models import RotationPlan, RotationRunStatus
from workflows.rotation import rotation_tick


class Command(BaseCommand):
    help = "Run the rotation steps that are due now (promote after the rollover, demote before the update date)."

    def add_arguments(self, parser):
        parser.add_argument("--plan", type=int, metavar="ID", help="Only this plan.")
        parser.add_argument("--dry-run", action="store_true", help="Show; write nothing.")

    def handle(self, *args, plan: int | None, dry_run: bool, **options):
        plans = RotationPlan.objects.order_by("pk")
        plans = plans.filter(pk=plan) if plan is not None else plans.filter(enabled=True)
        if plan is not None and not plans.exists():
            raise CommandError(f"No rotation plan with id {plan}.")
        held = 0
        for rotation in plans:
            outcome = rotation_tick(plan=rotation, dry_run=dry_run)
            verb = "would " if dry_run else ""
            parts = []
            if outcome.promote is None:
                parts.append("promotion waits for this period's rollover")
            else:
                run = outcome.promote
                held += run.status == RotationRunStatus.HELD
                parts.append(f"{verb}promote {run.promoted} ({run.get_status_display().lower()})")
            if outcome.demote is None:
                parts.append("no demotion due (outside the lead time)")
            else:
                parts.append(
                    f"{verb}demote {outcome.demote.demoted} at {outcome.demote.boundary:%Y-%m-%d}"
                )
            self.stdout.write(f"#{rotation.pk} {rotation.name}: " + "; ".join(parts))
        if held:
            raise CommandError(
                f"{counted(held, 'promotion')} {'waits' if held == 1 else 'wait'} for billing approval."
            )
