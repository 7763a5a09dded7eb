"""The close under real transactions: racing closes, a crash mid-close, a close racing changes.

PostgreSQL only: each thread needs its own connection and real row locks, which the
in-memory SQLite of the test settings cannot give. `transactional_db` lets every
transaction really commit (and flushes the tables afterwards).
"""

import datetime as dt
import random
import time

import pytest
from django.utils import timezone

from billing import services
from billing.models import BillingPeriod, Invoice
from billing.services import billing_close_periods
from contacts.models import Contact
from contacts.status.models import (
    PeriodUsage,
    StatusChange,
    UsageState,
)
from contacts.status.results import StatusSource
from contacts.status.selectors import (
    ledger_replay,
    usage_current,
)
from contacts.status.services import (
    contacts_delete,
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from crm.calendar import BillingCalendar
from tests.concurrency import Aside, run_together
from tests.conftest import at

pytestmark = pytest.mark.postgres

SRC = StatusSource("import", name="concurrency test")
OCT_1, NOV_1, DEC_1 = at(2026, 10, 1), at(2026, 11, 1), at(2026, 12, 1)


def two_months(make_contacts):
    """October: 2,500 marketing. November: +3,000, 1,000 pending from December 1."""
    october = make_contacts(2_500)
    contacts_set_marketing(contacts=october, source=SRC, at=at(2026, 10, 10))
    contacts_set_marketing(contacts=make_contacts(3_000), source=SRC, at=at(2026, 11, 10))
    leaving = list(october.order_by("pk").values_list("pk", flat=True)[:1_000])
    contacts_set_non_marketing(contacts=leaving, source=SRC, at=at(2026, 11, 12))


def test_two_closes_at_once_write_one_invoice_per_period(
    transactional_db, account, subscription, make_contacts, monkeypatch
):
    two_months(make_contacts)
    # Slow the replay so the first close holds the billing lock while the second arrives.
    replay = services.ledger_replay

    def slow_replay(**kwargs):
        time.sleep(0.2)
        return replay(**kwargs)

    monkeypatch.setattr(services, "ledger_replay", slow_replay)

    first, second = run_together(
        lambda: billing_close_periods(as_of=DEC_1, at=at(2026, 12, 1, 1)),
        lambda: billing_close_periods(as_of=DEC_1, at=at(2026, 12, 1, 1)),
    )

    statuses = {}
    for outcome in first + second:
        statuses.setdefault(outcome.period_start, []).append(outcome.status)
    assert {start: sorted(s) for start, s in statuses.items()} == {
        OCT_1: ["already_closed", "closed"],
        NOV_1: ["already_closed", "closed"],
    }
    assert sorted(Invoice.objects.values_list("period__start", "total")) == [
        (OCT_1, 80_000 + 22_500),  # peak 2,500
        (NOV_1, 80_000 + 22_500),  # peak 5,500
    ]
    # The close that lost each race reports the figures the winner closed the period with.
    figures = {}
    for outcome in first + second:
        figures.setdefault(outcome.period_start, []).append(
            (
                outcome.peak_count,
                outcome.counter_peak_count,
                outcome.invoice_number,
                outcome.total,
                outcome.currency,
            )
        )
    assert {start: len(set(both)) for start, both in figures.items()} == {OCT_1: 1, NOV_1: 1}
    assert StatusChange.objects.filter(action="rollover").count() == 1_000
    assert PeriodUsage.objects.get(period_start=DEC_1).opening_count == 4_500


def test_status_changes_go_through_while_the_close_replays_and_rolls_over(
    transactional_db, account, subscription, make_contacts, monkeypatch
):
    two_months(make_contacts)
    newcomers = list(make_contacts(2).values_list("pk", flat=True))
    replay = services.ledger_replay
    during_replay = []

    # A change made from inside the close's transaction, on another connection: it must
    # not wait for the close (which holds the billing lock, not the usage lock).
    def replay_beside_a_change(**kwargs):
        pk = newcomers[len(during_replay)]
        aside = Aside(lambda: contacts_set_marketing(contacts=[pk], source=SRC))
        during_replay.append(aside)
        assert aside.done(timeout=30), "a status change waited for the close's replay"
        return replay(**kwargs)

    monkeypatch.setattr(services, "ledger_replay", replay_beside_a_change)

    outcomes = billing_close_periods(as_of=DEC_1, at=at(2026, 12, 1, 1))

    assert [(o.period_start, o.status, o.peak_count) for o in outcomes] == [
        (OCT_1, "closed", 2_500),
        (NOV_1, "closed", 5_500),
    ]
    assert [aside.result.changed for aside in during_replay] == [1, 1]
    assert outcomes[-1].rollover_applied == 1_000
    now = usage_current()
    assert now.live_count == 4_500 + 2
    assert ledger_replay(start=now.period_start, end=now.period_end).peak_count == now.peak_count


def test_a_crash_between_period_and_invoice_leaves_nothing_and_the_rerun_completes(
    transactional_db, account, subscription, make_contacts, monkeypatch
):
    two_months(make_contacts)
    billing_close_periods(as_of=NOV_1, at=at(2026, 11, 20))  # October, before the crash
    ledger = StatusChange.objects.count()
    counters = list(PeriodUsage.objects.order_by("period_start").values())
    clock = UsageState.objects.get().last_change_at
    write_invoice = services._write_invoice
    crashes = []

    def crash_once(**kwargs):
        if not crashes:
            crashes.append(kwargs["period"].start)
            raise RuntimeError("the worker died between the period and its invoice")
        return write_invoice(**kwargs)

    monkeypatch.setattr(services, "_write_invoice", crash_once)

    with pytest.raises(RuntimeError, match="worker died"):
        billing_close_periods(as_of=DEC_1, at=at(2026, 12, 1, 1))

    assert crashes == [NOV_1]
    assert not BillingPeriod.objects.filter(start=NOV_1).exists()
    assert not Invoice.objects.filter(period__start=NOV_1).exists()
    # The rollover of the same transaction is undone too: the ledger, the contacts' pending
    # downgrades, December's counter row and the change clock are as they were.
    assert StatusChange.objects.count() == ledger
    assert Contact.objects.filter(marketing_until=DEC_1).count() == 1_000
    assert list(PeriodUsage.objects.order_by("period_start").values()) == counters
    assert UsageState.objects.get().last_change_at == clock

    outcomes = billing_close_periods(as_of=DEC_1, at=at(2026, 12, 1, 2))

    assert [(o.period_start, o.status, o.peak_count) for o in outcomes] == [
        (NOV_1, "closed", 5_500)
    ]
    assert Invoice.objects.filter(period__start=NOV_1).count() == 1
    assert Invoice.objects.count() == 2
    assert StatusChange.objects.filter(action="rollover").count() == 1_000
    assert not Contact.objects.filter(
        marketing_status="marketing", marketing_until__isnull=False
    ).exists()


def test_a_close_racing_status_changes_keeps_the_counters_equal_to_the_ledger(
    transactional_db, account, subscription, make_contacts
):
    # The changes run at the real present, so the closed period is the one before it.
    calendar = BillingCalendar.for_account()
    current_start, _ = calendar.period_bounds(timezone.now())
    previous_start, _ = calendar.period_bounds(current_start - dt.timedelta(days=1))
    day = dt.timedelta(days=1)
    pool = make_contacts(400)
    ids = sorted(pool.values_list("pk", flat=True))
    contacts_set_marketing(contacts=ids[:250], source=SRC, at=previous_start + day)
    contacts_set_non_marketing(contacts=ids[:80], source=SRC, at=previous_start + 2 * day)
    contacts_set_marketing(contacts=ids[:20], source=SRC, at=previous_start + 3 * day)
    # 60 downgrades are due at current_start; the close applies them while others change.

    def changer(seed):
        def run():
            rng = random.Random(seed)
            done = 0
            for _ in range(12):
                chosen = rng.sample(ids, 25)
                operation = rng.choice(["up", "down", "up", "down", "delete"])
                if operation == "up":
                    contacts_set_marketing(contacts=chosen, source=SRC)
                elif operation == "down":
                    contacts_set_non_marketing(contacts=chosen, source=SRC)
                else:
                    contacts_delete(contacts=chosen[:3])
                done += 1
            return done

        return run

    def close():
        return billing_close_periods(as_of=timezone.now())

    outcomes, *changes = run_together(close, changer(1), changer(2), changer(3))

    # (Run in the last instant of a month, the close may also find the period just ended.)
    assert [(o.period_start, o.status) for o in outcomes][:1] == [(previous_start, "closed")]
    assert {o.status for o in outcomes} == {"closed"}
    assert changes == [12, 12, 12]
    assert Invoice.objects.filter(period__start=previous_start).count() == 1
    for row in PeriodUsage.objects.all():
        replay = ledger_replay(start=row.period_start, end=row.period_end)
        assert (row.period_start, replay.peak_count) == (row.period_start, row.peak_count)
    now = timezone.now()
    usage = usage_current()
    assert usage.live_count == Contact.objects.billable(now).count()
    assert usage.pending_downgrades == Contact.objects.pending_downgrade(now).count()
    assert not Contact.objects.filter(
        marketing_status="marketing", marketing_until__lte=current_start
    ).exists()
