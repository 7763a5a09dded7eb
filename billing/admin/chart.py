"""The dashboard's chart: the daily peak against the tier, inline SVG drawn on the server
(no JavaScript, nothing from a CDN)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

from django.utils.formats import date_format

from billing.admin.base import format_count
from billing.selectors import (
    billing_daily_usage,
)
from crm.calendar import BillingCalendar

CHART_PERIODS = 12
CHART_WIDTH = 960
CHART_HEIGHT = 300
CHART_LEFT, CHART_RIGHT, CHART_TOP, CHART_BOTTOM = 64, 110, 16, 44
CHART_TICKS = 5
CHART_BLOCK_LINES = 4  # block boundaries drawn above the tier, at most


def _nice_step(rough: float) -> int:
    """The smallest of 1, 2, 5 × 10^k that is at least `rough` (axis ticks people can read)."""
    if rough <= 1:
        return 1
    magnitude = 10 ** math.floor(math.log10(rough))
    for multiple in (1, 2, 5, 10):
        if rough <= multiple * magnitude:
            return int(multiple * magnitude)
    return int(10 * magnitude)


def _num(value: float) -> str:
    """A coordinate for an SVG attribute: never localised ("12,5" would break the drawing)."""
    return f"{value:.1f}"


def chart_periods(calendar: BillingCalendar, now: dt.datetime, count: int = CHART_PERIODS):
    """The `count` periods ending with the current one, oldest first, as (start, end)."""
    periods = [calendar.period_bounds(now)]
    while len(periods) < count:
        start = periods[0][0]
        periods.insert(0, calendar.period_bounds(start - dt.timedelta(microseconds=1)))
    return periods


@dataclass
class UsageChart:
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    plot: dict = field(default_factory=dict)
    bars: list = field(default_factory=list)
    y_ticks: list = field(default_factory=list)
    periods: list = field(default_factory=list)
    tier: dict = field(default_factory=dict)
    block_lines: list = field(default_factory=list)
    today: dict | None = None
    summary: list = field(default_factory=list)
    highest: int = 0
    first_day: dt.date | None = None
    last_day: dt.date | None = None
    days_recorded: int = 0


def usage_chart(
    *, calendar: BillingCalendar, now: dt.datetime, tier: int, block_size: int
) -> UsageChart:
    """Bars of each day's maximum billable count (DailyUsage.max_count) over the last 12
    periods, a line at the tier, dashed lines where overage blocks start, the period
    boundaries and today. Geometry is computed here; the template only draws it."""
    tz = calendar.tz
    periods = chart_periods(calendar, now)
    first_day = periods[0][0].astimezone(tz).date()
    end_day = periods[-1][1].astimezone(tz).date()  # exclusive
    days = max(1, (end_day - first_day).days)
    rows = list(
        billing_daily_usage(since=first_day).filter(day__lt=end_day).values_list("day", "max_count")
    )
    highest = max((count for _, count in rows), default=0)

    left, top = CHART_LEFT, CHART_TOP
    plot_w = CHART_WIDTH - CHART_LEFT - CHART_RIGHT
    plot_h = CHART_HEIGHT - CHART_TOP - CHART_BOTTOM
    bottom = top + plot_h
    ceiling = max(highest, tier, 1) * 1.08
    step = _nice_step(ceiling / CHART_TICKS)
    y_max = step * math.ceil(ceiling / step)

    def x_of(day: dt.date) -> float:
        return left + (day - first_day).days * plot_w / days

    def y_of(value: int) -> float:
        return bottom - value * plot_h / y_max

    chart = UsageChart(
        plot={
            "left": _num(left),
            "right": _num(left + plot_w),
            "top": _num(top),
            "bottom": _num(bottom),
            "width": _num(plot_w),
            "height": _num(plot_h),
            "label_x": _num(left + plot_w + 6),
            "axis_label_y": _num(bottom + 34),
        },
        highest=highest,
        first_day=first_day,
        last_day=end_day - dt.timedelta(days=1),
        days_recorded=len(rows),
    )
    day_w = plot_w / days
    bar_w = max(day_w * 0.8, 1.0)
    for day, count in rows:
        y = y_of(count)
        chart.bars.append(
            {
                "x": _num(x_of(day) + (day_w - bar_w) / 2),
                "y": _num(y),
                "width": _num(bar_w),
                "height": _num(bottom - y),
                "over": count > tier,
                "title": f"{date_format(day, 'j M Y')}: at most {format_count(count)} marketing",
            }
        )
    chart.y_ticks = [
        {"y": _num(y_of(value)), "label": format_count(value), "text_y": _num(y_of(value) + 4)}
        for value in range(0, y_max + 1, step)
    ]
    per_period_max: dict[int, int] = {}
    for day, count in rows:
        for index, (start, end) in enumerate(periods):
            if start.astimezone(tz).date() <= day < end.astimezone(tz).date():
                per_period_max[index] = max(per_period_max.get(index, 0), count)
                break
    for index, (start, end) in enumerate(periods):
        start_day, stop_day = start.astimezone(tz).date(), end.astimezone(tz).date()
        x0, x1 = x_of(start_day), x_of(stop_day)
        chart.periods.append(
            {
                "x": _num(x0),
                "width": _num(x1 - x0),
                "label_x": _num((x0 + x1) / 2),
                "label_y": _num(bottom + 16),
                "label": date_format(start_day, "M Y"),
                "current": index == len(periods) - 1,
            }
        )
        chart.summary.append(
            {
                "start": start,
                "end": end,
                "highest": per_period_max.get(index),
                "current": index == len(periods) - 1,
            }
        )
    chart.tier = {"y": _num(y_of(tier)), "text_y": _num(y_of(tier) + 4), "value": tier}
    if block_size > 0:
        for k in range(1, CHART_BLOCK_LINES + 1):
            value = tier + k * block_size
            if value > y_max:
                break
            chart.block_lines.append(
                {
                    "y": _num(y_of(value)),
                    "text_y": _num(y_of(value) + 4),
                    "label": f"{format_count(value)}: {k + 1} blocks",
                }
            )
    today = now.astimezone(tz).date()
    chart.today = {"x": _num(x_of(today) + day_w / 2), "label_y": _num(top + 10)}
    return chart
