"""What the billing commands share: reading dates in the account's time zone.

The commands are interfaces (STYLE.md): they parse, call a service or a selector and
print. Dates typed by an operator mean the account's calendar, not UTC — "2026-12-15"
is local midnight there, the instant a period starts — so they are read here, once.
"""

from __future__ import annotations

import datetime as dt

from django.core.management.base import CommandError

from crm.calendar import BillingCalendar
from crm.instants import InstantOutOfRange, instant_utc

__all__ = [
    "local_day",
    "local_time",
    "parse_instant",
    "parse_month",
    "period_label",
]


def parse_instant(value: str, *, calendar: BillingCalendar) -> dt.datetime:
    """A date is local midnight; a time without an offset is local time; an offset is
    honoured. The instant comes back in UTC (crm.instants)."""
    text = value.strip()
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None:
        instant = dt.datetime(day.year, day.month, day.day, tzinfo=calendar.tz)
    else:
        try:
            instant = dt.datetime.fromisoformat(text)
        except ValueError:
            raise CommandError(f"{value!r} is not a date (use YYYY-MM-DD).") from None
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=calendar.tz)
    try:
        return instant_utc(instant)
    except InstantOutOfRange as error:
        raise CommandError(str(error)) from None


def parse_month(value: str) -> tuple[int, int]:
    try:
        first = dt.date.fromisoformat(f"{value.strip()}-01")
    except ValueError:
        raise CommandError(f"{value!r} is not a month (use YYYY-MM, e.g. 2026-11).") from None
    return first.year, first.month


def local_day(instant: dt.datetime, calendar: BillingCalendar) -> str:
    """A period bound as its local date (a period always starts at local midnight)."""
    return instant.astimezone(calendar.tz).date().isoformat()


def local_time(instant: dt.datetime, calendar: BillingCalendar) -> str:
    return f"{instant.astimezone(calendar.tz):%Y-%m-%d %H:%M} {calendar.time_zone}"


def period_label(start: dt.datetime, end: dt.datetime, calendar: BillingCalendar) -> str:
    return f"{local_day(start, calendar)} → {local_day(end, calendar)}"
