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


# --- extensions the interfaces see through the status service --------------------
#
# Two more explicit extension points, for the same reason as the usage listener:
# `contacts` cannot import `billing`, yet a preview should show the money and a
# change past the guardrails should wait for approval.
#
# * A preview extension adds facts to `StatusPreview.extra` (billing adds "cost").
# * A change guard sees a guarded change before anything is written and may hold
#   it by returning a message; the service then raises `ChangeHeld`.

PreviewExtension = Callable[[object], dict]
_preview_extensions: list[PreviewExtension] = []


@dataclass(frozen=True)
class GuardRequest:
    operation: str
    contacts: object  # a QuerySet[Contact] or a list of ids
    preview: object  # contacts.services.StatusPreview
    source: object  # contacts.services.StatusSource
    actor: object
    idempotency_key: str


ChangeGuard = Callable[[GuardRequest], str | None]
_guards: list[ChangeGuard] = []


def register_preview_extension(extension: PreviewExtension) -> None:
    if extension not in _preview_extensions:
        _preview_extensions.append(extension)


def preview_extras(preview) -> dict:
    extra: dict = {}
    for extension in list(_preview_extensions):
        extra.update(extension(preview))
    return extra


def register_change_guard(guard: ChangeGuard) -> None:
    if guard not in _guards:
        _guards.append(guard)


def check_guards(request: GuardRequest) -> str | None:
    """The first guard's reason to hold the change, or None to let it run."""
    for guard in list(_guards):
        reason = guard(request)
        if reason:
            return reason
    return None
