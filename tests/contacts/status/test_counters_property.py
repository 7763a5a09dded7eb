"""After any sequence of changes, deletions, retries and rollovers, the counters equal the ledger.

The live count must equal a recount of billable contacts and the replay of the
ledger; every period's running peak must equal a naive replay (tests/replay.py).
"""

import datetime as dt
import itertools

from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contacts.models import Contact
from contacts.status.models import (
    PeriodUsage,
    UsageState,
)
from contacts.status.results import StatusSource
from contacts.status.selectors import (
    ledger_replay,
    usage_current,
)
from contacts.status.services import (
    contacts_delete,
    contacts_rollover,
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from crm.calendar import BillingCalendar
from tests.conftest import at
from tests.factories import SourceFactory
from tests.replay import count_at, ledger_events, peak_between

START = at(2026, 10, 20, 9)
SOURCE = StatusSource("manual", name="property test")
OPERATIONS = {
    "up": contacts_set_marketing,
    "down": contacts_set_non_marketing,
}

picks = st.sets(st.integers(min_value=0, max_value=11), max_size=8)
steps = st.one_of(
    st.tuples(st.just("create"), st.integers(min_value=1, max_value=4)),
    st.tuples(st.sampled_from(["up", "down", "delete"]), picks, st.booleans()),
    st.tuples(st.just("advance"), st.integers(min_value=0, max_value=40 * 24 * 3600)),
    st.tuples(st.just("boundary"), st.sampled_from([-1, 0, 1])),
    st.tuples(st.just("rollover")),
    st.tuples(st.just("retry")),
)


class Rollback(Exception):
    pass


def check_invariants(clock):
    events = ledger_events()
    usage = usage_current(at=clock)
    assert usage.live_count == Contact.objects.billable(clock).count()
    assert usage.live_count == count_at(clock, events)
    assert usage.peak_count == peak_between(usage.period_start, usage.period_end, events)
    for row in PeriodUsage.objects.all():
        assert row.peak_count == peak_between(row.period_start, row.period_end, events), row
        assert (
            row.peak_count == ledger_replay(start=row.period_start, end=row.period_end).peak_count
        )
    assert Contact.objects.pending_downgrade(clock).count() == usage.pending_downgrades


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(steps, min_size=1, max_size=20))
def test_counters_always_equal_a_recount_and_the_ledger_replay(account, sequence):
    source = SourceFactory(name="Property", kind="manual")
    calendar = BillingCalendar.for_account()
    emails = itertools.count()
    try:
        with transaction.atomic():
            clock = START
            last = None
            for number, step in enumerate(sequence):
                kind = step[0]
                if kind == "create":
                    Contact.objects.bulk_create(
                        Contact(email=f"p{next(emails)}@example.com", source=source)
                        for _ in range(step[1])
                    )
                elif kind in ("up", "down", "delete"):
                    ids = sorted(Contact.objects.values_list("pk", flat=True))
                    chosen = sorted({ids[i % len(ids)] for i in step[1]}) if ids else []
                    target = chosen if step[2] else Contact.objects.filter(pk__in=chosen)
                    key = f"step-{number}"
                    if kind == "delete":
                        last = (contacts_delete, {"contacts": target, "idempotency_key": key})
                    else:
                        last = (
                            OPERATIONS[kind],
                            {"contacts": target, "source": SOURCE, "idempotency_key": key},
                        )
                    last[0](**last[1], at=clock)
                elif kind == "advance":
                    clock += dt.timedelta(seconds=step[1])
                elif kind == "boundary":
                    clock = max(clock, calendar.next_update(clock) + dt.timedelta(seconds=step[1]))
                elif kind == "rollover":
                    contacts_rollover(at=clock)
                elif kind == "retry" and last is not None:
                    before = len(ledger_events())
                    result = last[0](**last[1], at=clock)
                    assert result.replayed
                    assert len(ledger_events()) == before
                # The service gives each change its own instant, a tick after the last one.
                last_change = UsageState.objects.values_list("last_change_at", flat=True).first()
                clock = max(clock, last_change or clock)
                check_invariants(clock)
            raise Rollback
    except Rollback:
        pass


def test_the_sql_replay_equals_the_python_replay(account, contact_factory, manual):
    contacts = contact_factory.create_batch(6)
    ids = [c.pk for c in contacts]
    contacts_set_marketing(contacts=ids[:4], source=manual, at=at(2026, 10, 20))
    contacts_set_non_marketing(contacts=ids[:2], source=manual, at=at(2026, 10, 21))
    contacts_set_marketing(contacts=ids[1:], source=manual, at=at(2026, 11, 3))
    contacts_delete(contacts=ids[5:], at=at(2026, 11, 4))
    contacts_set_non_marketing(contacts=ids[2:4], source=manual, at=at(2026, 11, 5))
    for start, end in [(at(2026, 10, 1), at(2026, 11, 1)), (at(2026, 11, 1), at(2026, 12, 1))]:
        replay = ledger_replay(start=start, end=end)
        assert replay.peak_count == peak_between(start, end)
        assert replay.opening_count == count_at(start)
        assert replay.closing_count == count_at(end - dt.timedelta(microseconds=1))
    november = ledger_replay(start=at(2026, 11, 1), end=at(2026, 12, 1))
    assert (november.opening_count, november.peak_count, november.closing_count) == (2, 5, 4)
