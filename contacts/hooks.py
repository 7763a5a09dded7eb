"""The one after-commit hook that `contacts` offers (DESIGN §2).

`contacts` imports neither `billing` nor `workflows`; where they must react at
once to a change of the billable count (billing alerts, for instance), they
register a listener here from their AppConfig.ready(). Listeners run after the
status change commits, with a `UsageChange`; an exception in one is logged and
does not affect the others or the change, which is already stored.
"""

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UsageChange:
    operation: str
    at: dt.datetime
    period_start: dt.datetime
    live_count: int
    peak_count: int
    became_marketing: int


UsageListener = Callable[[UsageChange], None]
_listeners: list[UsageListener] = []


def register_usage_listener(listener: UsageListener) -> None:
    if listener not in _listeners:
        _listeners.append(listener)


def unregister_usage_listener(listener: UsageListener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def notify_usage_changed(change: UsageChange) -> None:
    for listener in list(_listeners):
        try:
            listener(change)
        except Exception:  # a listener's failure must not undo a committed change
            logger.exception("usage listener %r failed", listener)
