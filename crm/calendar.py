"""The billing calendar: half-open periods [update date, next update date).

A period starts at local midnight of the update day in the account's time zone
(clamped to the last day of a short month) and is stored in UTC. Across a
daylight-saving change the period still starts at local midnight, so such a
period is an hour longer or shorter than its days.
"""

import calendar as _calendar
import datetime as dt
import zoneinfo
from dataclasses import dataclass

from django.utils import timezone


@dataclass(frozen=True)
class BillingCalendar:
    update_day: int
    time_zone: str

    @classmethod
    def for_account(cls, account=None) -> "BillingCalendar":
        from crm.models import Account

        account = account or Account.load()
        return cls(update_day=account.effective_update_day, time_zone=account.time_zone)

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    def start_in_month(self, year: int, month: int) -> dt.datetime:
        """The period start that falls in the given month, as an aware UTC datetime."""
        day = min(self.update_day, _calendar.monthrange(year, month)[1])
        local = dt.datetime(year, month, day, tzinfo=self.tz)
        return local.astimezone(dt.UTC)

    def period_bounds(self, at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """The period [start, end) that contains the instant `at`."""
        if timezone.is_naive(at):
            raise ValueError("period_bounds needs an aware datetime")
        local = at.astimezone(self.tz)
        year, month = local.year, local.month
        start = self.start_in_month(year, month)
        if at < start:
            year, month = _add_months(year, month, -1)
            start = self.start_in_month(year, month)
        end = self.start_in_month(*_add_months(year, month, 1))
        return start, end

    def next_update(self, at: dt.datetime) -> dt.datetime:
        return self.period_bounds(at)[1]

    def following(self, start: dt.datetime) -> dt.datetime:
        """The start of the period after the one that starts at `start`."""
        return self.period_bounds(start)[1]


def _add_months(year: int, month: int, delta: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + delta
    return index // 12, index % 12 + 1
