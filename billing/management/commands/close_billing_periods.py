"""`manage.py close_billing_periods [--as-of DATE] [--dry-run]`: close every ended period.

The same service as the daily beat task and the admin action (DESIGN §1.4), so a
rerun — or a run racing the task — closes nothing twice. A period held because the
ledger replay and the counters disagree makes the command fail, so a cron job or an
operator notices; the other periods are still closed. An `--as-of` in the future is
refused, not read as "now": a mistyped date must not look like a successful close.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing.management import local_time, parse_instant, period_label
from billing.money import format_money
from billing.services import CloseOutcome, billing_close_periods
from crm.calendar import BillingCalendar
from crm.text import counted

STATUS_LABELS = {
    "closed": "closed",
    "already_closed": "already closed",
    "would_close": "would close",
    "held": "HELD",
}


class Command(BaseCommand):
    help = (
        "Close every billing period that has ended: apply the downgrades due at its end, "
        "check the peak against the ledger and write its invoice. Safe to rerun."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--as-of",
            metavar="DATE|DATETIME",
            help="Close the periods ended by this instant (default: now). A date is local "
            "midnight in the account's time zone; a time without an offset is local too.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Show what would be closed and invoiced; write nothing.",
        )

    def handle(self, *args, as_of: str | None, dry_run: bool, **options):
        calendar = BillingCalendar.for_account()
        now = timezone.now()
        as_of_at = parse_instant(as_of, calendar=calendar) if as_of is not None else now
        if as_of_at > now:
            raise CommandError(
                f"--as-of {local_time(as_of_at, calendar)} is in the future (it is "
                f"{local_time(now, calendar)}): only periods that have ended can be closed. "
                "Nothing was closed; give a past date, or leave --as-of out to close every "
                "period that has ended by now."
            )

        outcomes = billing_close_periods(as_of=as_of_at, dry_run=dry_run)

        if not outcomes:
            self.stdout.write(
                f"Nothing to close: every period that ended by {local_time(as_of_at, calendar)} "
                "is closed."
            )
            return
        for outcome in outcomes:
            self.stdout.write(self._line(outcome, calendar, dry_run=dry_run))
        self.stdout.write(self._summary(outcomes, dry_run=dry_run))
        held = [o for o in outcomes if o.status == "held"]
        if held:
            raise CommandError(" ".join(self._held_sentence(o, calendar, dry_run) for o in held))

    def _line(self, outcome: CloseOutcome, calendar: BillingCalendar, *, dry_run: bool) -> str:
        parts = [
            period_label(outcome.period_start, outcome.period_end, calendar),
            f"{STATUS_LABELS.get(outcome.status, outcome.status):<14}",
            f"peak {outcome.peak_count:>9,}",
            f"counter peak {outcome.counter_peak_count:>9,}",
        ]
        if outcome.invoice_number:
            parts.append(f"invoice {outcome.invoice_number}")
        # A held period has no invoice; a dry run prices what it would invoice.
        if outcome.invoice_number or outcome.status == "would_close" or dry_run:
            parts.append(f"total {format_money(outcome.total, outcome.currency)}")
        return "  ".join(parts)

    def _summary(self, outcomes: list[CloseOutcome], *, dry_run: bool) -> str:
        counts = {status: sum(o.status == status for o in outcomes) for status in STATUS_LABELS}
        if dry_run:
            return (
                f"Dry run, nothing written: {counted(counts['would_close'], 'period')} would close, "
                f"{counts['held']} would be held."
            )
        invoiced = [o for o in outcomes if o.status == "closed"]
        totals = {}
        for outcome in invoiced:
            totals[outcome.currency] = totals.get(outcome.currency, 0) + outcome.total
        money = ", ".join(format_money(total, currency) for currency, total in totals.items())
        summary = f"Closed {counted(len(invoiced), 'period')}"
        if money:
            summary += f", invoiced {money}"
        if counts["already_closed"]:
            summary += f"; {counts['already_closed']} already closed by another run"
        if counts["held"]:
            summary += f"; {counts['held']} held"
        return summary + "."

    def _held_sentence(self, outcome: CloseOutcome, calendar: BillingCalendar, dry_run) -> str:
        period = period_label(outcome.period_start, outcome.period_end, calendar)
        verb = "would be held" if dry_run else "is held and was not invoiced"
        return (
            f"The period {period} {verb}: the ledger replay gives a peak of "
            f"{outcome.peak_count:,} but the live counters recorded {outcome.counter_peak_count:,}. "
            "Find the cause (run verify_billing), repair it, then rerun close_billing_periods."
        )
