"""What a status change is asked with and answers: its source, result, preview and errors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

from django.db.models import QuerySet

from contacts.models import (
    Contact,
    StatusSourceType,
)

SET_MARKETING = "set_marketing"
SET_NON_MARKETING = "set_non_marketing"
DELETE = "delete"
ROLLOVER = "rollover"

Target = Contact | int | Iterable[int] | QuerySet
Progress = Callable[[int, int], None]


class StatusError(Exception):
    """A status change that cannot be made; the message is meant for the user."""


class LockedSourceError(StatusError):
    pass


class MarketingNotPermitted(StatusError):
    """A person without contacts.change_marketing_status asked for a marketing contact."""


class IdempotencyConflict(StatusError):
    pass


class SourceInUse(StatusError):
    """A source that contacts still record cannot be deleted."""


class ChangeHeld(StatusError):
    """The guardrails held the change for approval; nothing of it was written.

    The message says why and where it waits; `reason` is the why alone.
    """

    def __init__(self, message: str, *, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class StatusSource:
    """Who or what asks for a change: recorded on the ledger and the contact."""

    type: str
    id: str = ""
    name: str = ""

    def __post_init__(self):
        if self.type not in StatusSourceType.values:
            raise StatusError(f"Unknown status source type {self.type!r}.")
        object.__setattr__(self, "id", str(self.id or ""))


@dataclass
class StatusChangeResult:
    operation: str
    idempotency_key: str
    requested_at: dt.datetime
    matched: int = 0
    changed: int = 0  # became marketing now (set marketing), or were deleted
    already: int = 0  # already in the asked-for state
    scheduled: int = 0  # downgrades scheduled for `effective_from`
    cancelled: int = 0  # pending downgrades cancelled
    applied: int = 0  # pending downgrades applied by a rollover
    effective_from: dt.datetime | None = None
    live_count: int = 0
    peak_count: int = 0
    replayed: bool = False

    def as_dict(self) -> dict:
        data = asdict(self)
        for key in ("requested_at", "effective_from"):
            data[key] = data[key].isoformat() if data[key] else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> StatusChangeResult:
        data = dict(data)
        for key in ("requested_at", "effective_from"):
            data[key] = dt.datetime.fromisoformat(data[key]) if data.get(key) else None
        return cls(**data)


@dataclass
class StatusPreview:
    """What a change would do, computed without writing."""

    operation: str
    at: dt.datetime
    matched: int = 0
    would_change: int = 0
    would_schedule: int = 0
    would_cancel: int = 0
    already: int = 0
    effective_from: dt.datetime | None = None
    live_count: int = 0
    live_after: int = 0
    peak_count: int = 0
    peak_after: int = 0
    period_start: dt.datetime | None = None
    period_end: dt.datetime | None = None
    extra: dict = field(default_factory=dict)
