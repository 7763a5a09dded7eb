"""Billing over many periods as a Hypothesis state machine, against plain-Python models.

Rules change statuses (set marketing, set non-marketing, re-mark pending contacts,
delete), repeat the last request under its idempotency key, move a monotonic clock
(up to ~40 days, or to an update date ± 1 s) and close periods. After every step the
O(1) counters must equal a recount of the contacts and a naive replay of the ledger
(tests/replay.py); after every close each new invoice must equal the naive price of
the replayed peak, and every ended period must have exactly one invoice. Each example
picks its calendar: update day 1 in UTC, or the 31st in Stockholm (short months, DST).

Each example runs in its own savepoint, rolled back at teardown, inside the `db`
fixture's transaction.
"""

import datetime as dt
import itertools
import math

import pytest
from django.db import transaction
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from billing.models import BillingPeriod, Invoice, InvoiceLine, Subscription
from billing.services import billing_close_periods
from contacts.models import Contact
from contacts.status.models import (
    PeriodUsage,
    StatusChange,
    StatusChangeRequest,
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
from crm.models import Account
from tests.conftest import at
from tests.factories import SourceFactory
from tests.replay import count_at, ledger_events, peak_between

START = at(2026, 10, 20, 9)
SOURCE = StatusSource("manual", name="state machine")
# A tiny tier so a pool of a few contacts crosses several blocks.
BASE, INCLUDED, BLOCK, BLOCK_PRICE = 1_000, 4, 3, 500

picks = st.sets(st.integers(min_value=0, max_value=15), min_size=1, max_size=10)
# Changes are spread over time, as in use: most come days apart, some at once.
waits = st.one_of(
    st.just(0),
    st.integers(min_value=1, max_value=3600),
    st.integers(min_value=24 * 3600, max_value=6 * 24 * 3600),
)


def model_total(peak: int) -> int:
    """DESIGN §1.4, written the naive way."""
    return BASE + math.ceil(max(0, peak - INCLUDED) / BLOCK) * BLOCK_PRICE


class Rollback(Exception):
    pass


class BillingMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        self.calendar = None  # chosen by `choose_calendar`
        self.source = SourceFactory(name="State machine", kind="manual")
        self.emails = itertools.count()
        self.keys = itertools.count()
        self.clock = START
        self.last = None  # (service, kwargs) of the last request, to repeat
        self.next_to_close = None  # the first period with activity, then the next unclosed
        self.closed = []
        self._create(10)

    def teardown(self):
        self.atomic.__exit__(Rollback, Rollback(), None)

    # --- helpers --------------------------------------------------------------------

    def _create(self, count: int) -> None:
        Contact.objects.bulk_create(
            Contact(email=f"sm{next(self.emails)}@example.com", source=self.source)
            for _ in range(count)
        )

    def _pick(self, ids: list[int], chosen: set[int]) -> list[int]:
        return sorted({ids[i % len(ids)] for i in chosen}) if ids else []

    def _sync_clock(self) -> None:
        """The service gives each change its own instant, a tick after the last one."""
        last_change = UsageState.objects.values_list("last_change_at", flat=True).first()
        self.clock = max(self.clock, last_change or self.clock)

    def _request(self, service, contact_ids: list[int], as_list: bool, wait: int, **extra) -> None:
        self.clock += dt.timedelta(seconds=wait)
        target = contact_ids if as_list else Contact.objects.filter(pk__in=contact_ids)
        kwargs = {"contacts": target, "idempotency_key": f"sm-{next(self.keys)}", **extra}
        service(**kwargs, at=self.clock)
        self.last = (service, kwargs)
        if self.next_to_close is None:
            self.next_to_close = (
                PeriodUsage.objects.order_by("period_start")
                .values_list("period_start", flat=True)
                .first()
            )
        self._sync_clock()

    def _ids(self) -> list[int]:
        return list(Contact.objects.order_by("pk").values_list("pk", flat=True))

    def _snapshot(self):
        return (
            StatusChange.objects.count(),
            StatusChangeRequest.objects.count(),
            list(
                Contact.objects.order_by("pk").values_list(
                    "pk", "marketing_status", "marketing_until"
                )
            ),
            list(PeriodUsage.objects.order_by("period_start").values()),
            UsageState.objects.values_list("last_change_at", flat=True).first(),
        )

    # --- rules ------------------------------------------------------------------------

    # Update day 1 in UTC; the 31st in Stockholm (clamped short months, DST shifts).
    @initialize(calendar=st.sampled_from([(1, "UTC"), (31, "Europe/Stockholm")]))
    def choose_calendar(self, calendar):
        account = Account.load()
        account.update_day, account.time_zone = calendar
        account.yearly_plan = False
        account.save()
        self.calendar = BillingCalendar.for_account(account)

    @rule(count=st.integers(min_value=1, max_value=3))
    def create(self, count):
        self._create(count)

    @rule(chosen=picks, as_list=st.booleans(), wait=waits)
    def set_marketing(self, chosen, as_list, wait):
        ids = self._pick(self._ids(), chosen)
        self._request(contacts_set_marketing, ids, as_list, wait, source=SOURCE)

    @rule(wait=waits)
    def set_everyone_marketing(self, wait):
        self._request(contacts_set_marketing, self._ids(), False, wait, source=SOURCE)

    @rule(chosen=picks, as_list=st.booleans(), wait=waits)
    def set_non_marketing(self, chosen, as_list, wait):
        ids = self._pick(self._ids(), chosen)
        self._request(contacts_set_non_marketing, ids, as_list, wait, source=SOURCE)

    @rule(chosen=picks, wait=waits)
    def re_mark_pending(self, chosen, wait):
        self.clock += dt.timedelta(seconds=wait)
        pending = list(
            Contact.objects.pending_downgrade(self.clock)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        self._request(contacts_set_marketing, self._pick(pending, chosen), True, 0, source=SOURCE)

    @rule(chosen=picks, as_list=st.booleans(), wait=waits)
    def delete(self, chosen, as_list, wait):
        ids = self._pick(self._ids(), chosen)[:3]
        self._request(contacts_delete, ids, as_list, wait)

    @precondition(lambda self: self.last is not None)
    @rule()
    def repeat_the_last_request(self):
        service, kwargs = self.last
        before = self._snapshot()

        result = service(**kwargs, at=self.clock)

        assert result.replayed
        assert self._snapshot() == before

    @rule(
        seconds=st.one_of(
            st.integers(min_value=1, max_value=6 * 3600),
            st.integers(min_value=3 * 24 * 3600, max_value=40 * 24 * 3600),
        )
    )
    def advance(self, seconds):
        self.clock += dt.timedelta(seconds=seconds)

    @rule(offset=st.sampled_from([-1, 0, 1]))
    def advance_to_the_update_date(self, offset):
        boundary = self.calendar.next_update(self.clock) + dt.timedelta(seconds=offset)
        self.clock = max(self.clock, boundary)

    def _ended_unclosed(self) -> list[dt.datetime]:
        """The model's periods that have ended by the clock and are not closed yet."""
        starts, start = [], self.next_to_close
        while start is not None and self.calendar.following(start) <= self.clock:
            starts.append(start)
            start = self.calendar.following(start)
        return starts

    @precondition(lambda self: self._ended_unclosed())
    @rule()
    def close(self):
        due = self._ended_unclosed()
        before = set(Invoice.objects.values_list("pk", flat=True))

        outcomes = billing_close_periods(at=self.clock)

        assert [(o.period_start, o.status) for o in outcomes] == [(s, "closed") for s in due]
        event(f"closed {min(len(outcomes), 3)}+ period(s) at once")
        events = ledger_events()
        new = Invoice.objects.exclude(pk__in=before).select_related("period")
        assert sorted(i.period.start for i in new) == due
        for invoice in new:
            peak = peak_between(invoice.period.start, invoice.period.end, events)
            assert invoice.period.peak_count == peak
            assert invoice.total == model_total(peak), (invoice.period, peak)
            assert invoice.total == sum(invoice.lines.values_list("amount", flat=True))
            event(f"an invoice with {min(-(-max(0, peak - INCLUDED) // BLOCK), 3)}+ blocks")
        self.closed += due
        self.next_to_close = self.calendar.following(due[-1])
        # Every period that has ended since the first change has exactly one invoice.
        assert sorted(Invoice.objects.values_list("period__start", flat=True)) == self.closed
        assert not BillingPeriod.objects.exclude(status="closed").exists()
        assert not InvoiceLine.objects.filter(kind="adjustment").exists()
        for row in PeriodUsage.objects.all():
            assert row.peak_count == peak_between(row.period_start, row.period_end, events)
            replay = ledger_replay(start=row.period_start, end=row.period_end)
            assert replay.peak_count == row.peak_count
        self._sync_clock()

    @precondition(lambda self: self.closed and not self._ended_unclosed())
    @rule()
    def close_again(self):
        before = self._snapshot(), list(Invoice.objects.values_list("pk", "total", "status"))

        outcomes = billing_close_periods(at=self.clock)

        assert outcomes == []
        # Only drafts past their grace window may have become final meanwhile.
        snapshot, invoices = before
        assert self._snapshot() == snapshot
        assert [(pk, total) for pk, total, _ in invoices] == list(
            Invoice.objects.values_list("pk", "total")
        )

    # --- invariants -------------------------------------------------------------------

    @invariant()
    def counters_equal_the_recount_and_the_replay(self):
        events = ledger_events()
        usage = usage_current(at=self.clock)
        assert usage.live_count == Contact.objects.billable(self.clock).count()
        assert usage.live_count == count_at(self.clock, events)
        assert usage.peak_count == peak_between(usage.period_start, usage.period_end, events)


@pytest.fixture
def tiny_subscription(db):
    subscription = Subscription.load()
    subscription.included_contacts = INCLUDED
    subscription.base_price = BASE
    subscription.block_size = BLOCK
    subscription.block_price = BLOCK_PRICE
    subscription.save()
    return subscription


def test_billing_over_many_periods_matches_the_models(db, tiny_subscription):
    run_state_machine_as_test(
        BillingMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
