"""Reads for intake: public forms and chatflows, and what switching a channel to marketing costs."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from django.utils import timezone

from contacts.models import (
    Contact,
    Source,
)
from contacts.status.selectors import usage_current


def form_public(*, slug: str):
    """An active form by slug, or None (contacts_form slug unique index)."""
    from contacts.intake.models import Form

    return Form.objects.select_related("source").filter(slug=slug, is_active=True).first()


def chatflow_public(*, chatflow_id: int):
    from contacts.intake.models import Chatflow

    return Chatflow.objects.select_related("source").filter(pk=chatflow_id, is_active=True).first()


CHANNEL_RATE_DAYS = 30  # the window whose rate of new contacts is projected


@dataclass(frozen=True)
class ChannelForecast:
    created_recently: int  # contacts the channel created in the last CHANNEL_RATE_DAYS days
    period_end: dt.datetime
    expected_new: int  # at that rate, new contacts from now to the period's end
    cost: dict | None  # billing's preview of making that many marketing now (preview extras)


def channel_marketing_forecast(*, source: Source, at: dt.datetime | None = None) -> ChannelForecast:
    """If a channel (form, chatflow, app) created its contacts as marketing from now on: at the
    rate of the last 30 days, how many would become marketing before the period ends, and
    what that does to this period's invoice (an estimate through the status preview, whose
    extensions price it). Two indexed counts; nothing is written."""
    from contacts.status.results import SET_MARKETING
    from contacts.status.services import contacts_status_preview

    now = at or timezone.now()
    created = Contact.objects.filter(
        source=source, created_at__gte=now - dt.timedelta(days=CHANNEL_RATE_DAYS)
    ).count()  # the source_id index, then created_at
    period_end = usage_current(at=now).period_end
    days_left = max(0.0, (period_end - now).total_seconds() / 86_400)
    expected = math.ceil(created / CHANNEL_RATE_DAYS * days_left)
    preview = contacts_status_preview(
        contacts=Contact.objects.none(), operation=SET_MARKETING, additional=expected, at=now
    )
    return ChannelForecast(
        created_recently=created,
        period_end=period_end,
        expected_new=expected,
        cost=preview.extra.get("cost"),
    )
