"""Billing reads: the usage of the current period priced against the subscription."""

from __future__ import annotations

import datetime as dt

from billing.models import Subscription
from contacts.selectors import usage_current


def overage_blocks(*, peak: int, included: int, block_size: int) -> int:
    """ceil(max(0, peak - included) / block_size), in integers."""
    over = max(0, peak - included)
    return -(-over // block_size)


def billing_usage(*, at: dt.datetime | None = None) -> dict:
    usage = usage_current(at=at)
    subscription = Subscription.load()
    blocks = overage_blocks(
        peak=usage.peak_count,
        included=subscription.included_contacts,
        block_size=subscription.block_size,
    )
    return {
        "live_count": usage.live_count,
        "peak_count": usage.peak_count,
        "opening_count": usage.opening_count,
        "included_contacts": subscription.included_contacts,
        "period_start": usage.period_start,
        "period_end": usage.period_end,
        "next_update_date": usage.next_update,
        "pending_downgrades": usage.pending_downgrades,
        "overage_blocks": blocks,
        "currency": subscription.currency,
    }
