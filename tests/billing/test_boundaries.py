"""Billing across the calendar's awkward edges: DST, short months, a second either side."""

import datetime as dt

import pytest

from billing.models import BillingPeriod
from billing.services import billing_close_periods
from contacts.status.models import PeriodUsage
from contacts.status.results import StatusSource
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from tests.conftest import at

SRC = StatusSource("import", name="boundary test")


def test_a_period_across_the_end_of_summer_time_closes_at_local_midnight(
    account, subscription, make_contacts
):
    account.time_zone = "Europe/Stockholm"
    account.save()
    people = make_contacts(3)
    ids = list(people.values_list("pk", flat=True))
    # October in Stockholm: [30 Sep 22:00 UTC, 31 Oct 23:00 UTC) — 31 days and one hour.
    contacts_set_marketing(contacts=ids, source=SRC, at=at(2026, 10, 5))
    contacts_set_non_marketing(
        contacts=ids[:1], source=SRC, at=at(2026, 10, 31, 22, 30)
    )  # 23:30 local
    contacts_set_marketing(
        contacts=make_contacts(2), source=SRC, at=at(2026, 10, 31, 23, 0, 1)
    )  # November

    billing_close_periods(as_of=at(2026, 11, 2), at=at(2026, 11, 2))

    october = BillingPeriod.objects.get(start=at(2026, 9, 30, 22))
    assert october.end == at(2026, 10, 31, 23)
    assert october.end - october.start == dt.timedelta(days=31, hours=1)
    assert (october.peak_count, october.closing_count) == (3, 3)
    assert october.invoice.total == 80_000
    november = PeriodUsage.objects.get(period_start=at(2026, 10, 31, 23))
    assert (november.opening_count, november.peak_count) == (2, 4)


@pytest.mark.parametrize(("year", "feb_end"), [(2027, 28), (2028, 29)])
def test_update_day_31_closes_february_on_its_last_day(
    account, subscription, make_contacts, year, feb_end
):
    account.update_day = 31
    account.save()
    contacts_set_marketing(contacts=make_contacts(2_001), source=SRC, at=at(year, 2, 10))

    outcomes = billing_close_periods(as_of=at(year, 3, 31), at=at(year, 3, 31, 1))

    assert [(o.period_start, o.period_end) for o in outcomes] == [
        (at(year, 1, 31), at(year, 2, feb_end)),
        (at(year, 2, feb_end), at(year, 3, 31)),
    ]
    assert [o.total for o in outcomes] == [102_500, 102_500]


@pytest.mark.parametrize(("offset", "next_opening"), [(-1, 0), (1, 1)])
def test_a_downgrade_a_second_either_side_of_the_update_date(
    account, subscription, make_contacts, offset, next_opening
):
    contact = make_contacts(1)
    contacts_set_marketing(contacts=contact, source=SRC, at=at(2026, 11, 10))
    contacts_set_non_marketing(
        contacts=contact, source=SRC, at=at(2026, 12, 1) + dt.timedelta(seconds=offset)
    )

    billing_close_periods(as_of=at(2027, 1, 1), at=at(2027, 1, 1, 1))

    december = BillingPeriod.objects.get(start=at(2026, 12, 1))
    assert (december.opening_count, december.peak_count) == (next_opening, next_opening)
    assert BillingPeriod.objects.get(start=at(2026, 11, 1)).peak_count == 1
