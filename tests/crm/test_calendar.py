import datetime as dt
import zoneinfo

import pytest

from crm.calendar import BillingCalendar

UTC = dt.UTC
STOCKHOLM = zoneinfo.ZoneInfo("Europe/Stockholm")


def utc(*args):
    return dt.datetime(*args, tzinfo=UTC)


def test_period_contains_its_start_but_not_its_end():
    cal = BillingCalendar(update_day=1, time_zone="UTC")
    start, end = cal.period_bounds(utc(2026, 11, 1))
    assert (start, end) == (utc(2026, 11, 1), utc(2026, 12, 1))
    assert cal.period_bounds(utc(2026, 12, 1))[0] == utc(2026, 12, 1)
    assert cal.period_bounds(utc(2026, 11, 30, 23, 59, 59))[1] == utc(2026, 12, 1)


@pytest.mark.parametrize(
    ("year", "expected_feb_start"),
    [(2027, utc(2027, 2, 28)), (2028, utc(2028, 2, 29))],
)
def test_update_day_31_clamps_to_the_end_of_february(year, expected_feb_start):
    cal = BillingCalendar(update_day=31, time_zone="UTC")
    start, end = cal.period_bounds(utc(year, 2, 15))
    assert start == utc(year, 1, 31)
    assert end == expected_feb_start
    assert cal.period_bounds(expected_feb_start) == (expected_feb_start, utc(year, 3, 31))
    assert cal.following(utc(year, 3, 31)) == utc(year, 4, 30)
    assert cal.following(utc(year, 4, 30)) == utc(year, 5, 31)


@pytest.mark.parametrize("day", [29, 30])
def test_update_days_29_and_30_in_a_common_february(day):
    cal = BillingCalendar(update_day=day, time_zone="UTC")
    assert cal.period_bounds(utc(2027, 2, 28, 12)) == (utc(2027, 2, 28), utc(2027, 3, day))
    assert cal.period_bounds(utc(2027, 2, 27)) == (utc(2027, 1, day), utc(2027, 2, 28))


def test_update_day_29_in_a_leap_february():
    cal = BillingCalendar(update_day=29, time_zone="UTC")
    assert cal.period_bounds(utc(2028, 2, 29, 1)) == (utc(2028, 2, 29), utc(2028, 3, 29))


def test_periods_start_at_local_midnight_in_the_account_time_zone():
    cal = BillingCalendar(update_day=15, time_zone="Europe/Stockholm")
    start, end = cal.period_bounds(utc(2026, 11, 20))
    # EXAMPLES §1: [2026-11-15 00:00 Stockholm, 2026-12-15 00:00 Stockholm)
    assert (start, end) == (utc(2026, 11, 14, 23), utc(2026, 12, 14, 23))
    assert start.astimezone(STOCKHOLM).hour == 0


def test_a_period_across_a_dst_change_is_an_hour_shorter_or_longer():
    cal = BillingCalendar(update_day=15, time_zone="Europe/Stockholm")
    spring_start, spring_end = cal.period_bounds(utc(2027, 3, 20))  # clocks go forward 28 March
    assert spring_end - spring_start == dt.timedelta(days=31) - dt.timedelta(hours=1)
    autumn_start, autumn_end = cal.period_bounds(utc(2026, 10, 20))  # back on 25 October
    assert autumn_end - autumn_start == dt.timedelta(days=31) + dt.timedelta(hours=1)
    assert spring_end.astimezone(STOCKHOLM).timetuple()[:5] == (2027, 4, 15, 0, 0)


def test_yearly_plans_update_on_the_first(account):
    account.update_day = 17
    account.yearly_plan = True
    account.save()
    cal = BillingCalendar.for_account()
    assert cal.period_bounds(utc(2026, 11, 20)) == (utc(2026, 11, 1), utc(2026, 12, 1))


def test_a_change_at_exactly_the_next_update_date_belongs_to_the_next_period():
    cal = BillingCalendar(update_day=1, time_zone="UTC")
    assert cal.period_bounds(utc(2027, 1, 1))[0] == utc(2027, 1, 1)
    assert cal.period_bounds(utc(2026, 12, 31, 23, 59, 59))[0] == utc(2026, 12, 1)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="aware"):
        BillingCalendar(update_day=1, time_zone="UTC").period_bounds(dt.datetime(2026, 1, 1))
