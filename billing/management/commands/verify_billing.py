"""`manage.py verify_billing [--periods N]`: do the counters and the closed periods agree
with the ledger?

The ledger is the source of truth (DESIGN §1.4); the O(1) counters and the stored
peaks are copies kept in step with it. This replays the ledger for the current
period and the last N earlier ones and compares, writing nothing. The current
period is also checked against a recount of the contacts table — one COUNT, fine
for an operator's check, which is why no request path does it.
"""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand, CommandError

from billing.management import period_label
from billing.models import BillingPeriod, BillingPeriodStatus
from contacts.models import Contact
from contacts.status.models import PeriodUsage
from contacts.status.selectors import (
    ledger_replay,
    status_clock,
    usage_current,
)
from crm.calendar import BillingCalendar
from crm.snapshot import read_snapshot
from crm.text import counted

TICK = dt.timedelta(microseconds=1)


class Command(BaseCommand):
    help = (
        "Compare the billing counters and the closed periods with a replay of the status "
        "ledger, for the current period and the last N. Writes nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--periods",
            type=int,
            default=3,
            metavar="N",
            help="How many earlier periods (with counters) to check besides the current one.",
        )

    def handle(self, *args, periods: int, **options):
        if periods < 0:
            raise CommandError(f"--periods must be 0 or more, not {periods}.")
        # Before the snapshot, which is read-only: the first use creates the account row.
        calendar = BillingCalendar.for_account()
        with read_snapshot():
            checks = self._checks(calendar, periods)

        mismatched = []
        for label, summary, problems in checks:
            if problems:
                self.stdout.write(f"MISMATCH  {label}: {'; '.join(problems)}")
                mismatched.append(f"{label} ({'; '.join(problems)})")
            else:
                self.stdout.write(f"OK        {label}: {summary}")
        checked = len(checks)
        if mismatched:
            raise CommandError(
                f"{len(mismatched):,} of {counted(checked, 'period')} disagree with the ledger: "
                f"{'; '.join(mismatched)}. Nothing was changed; a period that disagrees is "
                "held at its close until the counters are repaired."
            )
        self.stdout.write(
            f"All {counted(checked, 'period')} agree with the ledger."
            if checked != 1
            else "The period agrees with the ledger."
        )

    def _checks(self, calendar: BillingCalendar, periods: int) -> list[tuple[str, str, list]]:
        """Every comparison, read from one snapshot: a change committing meanwhile is in
        all of the counters, the ledger and the contacts, or in none of them."""
        # After the snapshot's first read: no change it sees lies after this instant.
        now = status_clock()
        start, end = calendar.period_bounds(now)
        earlier = list(
            PeriodUsage.objects.filter(period_start__lt=start).order_by("-period_start")[:periods]
        )
        closed = {
            p.start: p
            for p in BillingPeriod.objects.filter(start__in=[row.period_start for row in earlier])
        }
        checks = [
            (f"{period_label(start, end, calendar)} (current)", *self._current(start, end, now))
        ]
        for row in earlier:
            label = period_label(row.period_start, row.period_end, calendar)
            checks.append((label, *self._ended(row, closed.get(row.period_start))))
        return checks

    def _current(
        self, start: dt.datetime, end: dt.datetime, now: dt.datetime
    ) -> tuple[str, list[str]]:
        """(what agrees, what does not) for the period running now."""
        usage = usage_current(at=now)
        replay = ledger_replay(start=start, end=end)
        count_now = ledger_replay(start=start, end=now + TICK).closing_count
        recount = Contact.objects.billable(now).count()
        problems = []
        if replay.peak_count != usage.peak_count:
            problems.append(f"peak: ledger {replay.peak_count:,}, counters {usage.peak_count:,}")
        if not usage.live_count == count_now == recount:
            problems.append(
                f"live count: counters {usage.live_count:,}, ledger {count_now:,}, "
                f"contacts {recount:,}"
            )
        return f"peak {usage.peak_count:,}, live {usage.live_count:,}", problems

    def _ended(self, row: PeriodUsage, period: BillingPeriod | None) -> tuple[str, list[str]]:
        """(what agrees, what does not) for an ended period.

        A closed period is held to the peak its invoices bill (`billed_peak_count`: the
        invoice, then any adjustment for a late change), so a late change shows here
        until the next close bills it; a held period, to the peak recorded when held.
        """
        replay = ledger_replay(start=row.period_start, end=row.period_end)
        problems = []
        if replay.peak_count != row.peak_count:
            problems.append(f"peak: ledger {replay.peak_count:,}, counters {row.peak_count:,}")
        if period is None:
            state = "not closed yet"
        elif period.status == BillingPeriodStatus.CLOSED:
            state = "closed"
            if replay.peak_count != period.billed_peak_count:
                problems.append(
                    f"peak: ledger {replay.peak_count:,}, billed {period.billed_peak_count:,}"
                )
        else:
            state = "held, not invoiced: rerun close_billing_periods once repaired"
            if replay.peak_count != period.peak_count:
                problems.append(
                    f"peak: ledger {replay.peak_count:,}, recorded when held {period.peak_count:,}"
                )
        return f"peak {row.peak_count:,}, {state}", problems
