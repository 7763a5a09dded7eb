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
from typing import NamedTuple

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UsageChange:
    operation: str
    at: dt.datetime
    day: dt.date  # `at`'s date in the account's time zone
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


# A preview extension adds read-only facts to `StatusPreview.extra` for the screens that
# show a preview (billing adds "cost"). It decides nothing and writes nothing.
PreviewExtension = Callable[[object], dict]
_preview_extensions: list[PreviewExtension] = []


def register_preview_extension(extension: PreviewExtension) -> None:
    if extension not in _preview_extensions:
        _preview_extensions.append(extension)


def preview_extras(preview) -> dict:
    extra: dict = {}
    for extension in list(_preview_extensions):
        extra.update(extension(preview))
    return extra


# `contacts` stores engagement events; `workflows` scores them (scoring rules). When
# contacts records events on its own — a form submission, a chat, an ads lead, through
# `contacts.services.engagement_events_ingest` with `notify=True` — the listeners
# registered here run after the transaction commits, with the events newly stored
# (duplicates by external id are not in the list). Workflows registers one from its
# AppConfig.ready() that adds their points to the lead scores.
#
# A listener's failure is logged and does not undo the events (already committed); the
# score it missed is restored by the next full recompute (workflows' daily task). The
# engagement API composes contacts and workflows itself, in one transaction, and passes
# `notify=False`: its events are scored once, by the view, not again here.


class NewEngagementEvent(NamedTuple):
    """One engagement event as newly stored: what scoring needs to know about it. A named
    tuple: a batch makes 10,000, and a frozen dataclass costs four times as much to make."""

    contact_id: int
    type: str
    occurred_at: dt.datetime


EngagementListener = Callable[[list[NewEngagementEvent]], None]
_engagement_listeners: list[EngagementListener] = []


def register_engagement_listener(listener: EngagementListener) -> None:
    if listener not in _engagement_listeners:
        _engagement_listeners.append(listener)


def unregister_engagement_listener(listener: EngagementListener) -> None:
    if listener in _engagement_listeners:
        _engagement_listeners.remove(listener)


def notify_engagement_recorded(events: list[NewEngagementEvent]) -> None:
    if not events:
        return
    for listener in list(_engagement_listeners):
        try:
            listener(events)
        except Exception:  # the events are stored; the recompute restores the score
            logger.exception("engagement listener %r failed", listener)


# `contacts` cannot import `workflows`, yet an event-triggered workflow must see a
# contact as soon as it is created or updated. So every write path that creates or
# updates contacts — `contact_create`, `contact_update`, `contact_intake`, the
# connected-app batch, the CSV import, `contacts_set_property` — calls
# `contacts_changed(ids)`, which notifies the registered listeners with the ids
# AFTER the transaction commits (never for a rolled-back write). A listener gets the
# ids only and must be cheap in the number of contacts (workflows enqueue a task that
# evaluates just those ids). A failing listener is logged; the write is already stored.

ContactListener = Callable[[list[int]], None]
_contact_listeners: list[ContactListener] = []
# A listener may say when it listens at all (workflows: while an event-triggered workflow
# is enabled), so a write of many contacts need not gather their ids for nobody.
_listening: dict[ContactListener, Callable[[], bool]] = {}


def register_contact_listener(
    listener: ContactListener, *, listening: Callable[[], bool] | None = None
) -> None:
    if listener not in _contact_listeners:
        _contact_listeners.append(listener)
    if listening is not None:
        _listening[listener] = listening


def unregister_contact_listener(listener: ContactListener) -> None:
    if listener in _contact_listeners:
        _contact_listeners.remove(listener)
    _listening.pop(listener, None)


def _listens(listener: ContactListener) -> bool:
    """A listener listens unless it said when (`listening`) and that says not now."""
    listening = _listening.get(listener)
    return listening is None or listening()


def notify_contacts_changed(ids: list[int]) -> None:
    for listener in list(_contact_listeners):
        try:
            if _listens(listener):
                listener(ids)
        except Exception:  # a listener's failure must not undo a committed write
            logger.exception("contact listener %r failed", listener)


def contacts_changed(ids) -> None:
    """Tell the listeners, after commit, that these contacts were created or updated."""
    ids = sorted({int(pk) for pk in ids})
    if ids and _contact_listeners:
        from django.db import transaction

        transaction.on_commit(lambda: notify_contacts_changed(ids))


def has_contact_listeners() -> bool:
    """Whether any listener listens now."""
    return any(_listens(listener) for listener in _contact_listeners)


# A merge moves the merged-away contact's rows to the survivor before that contact is
# deleted. Rows of other apps that go with a deleted contact (workflows' enrollments and
# rotation members) must move too, and `contacts` cannot import those apps. So, unlike the
# notices above, merge listeners run INSIDE the merge's transaction, before the merged-away
# row is deleted: after commit the rows would already be gone with it. A listener only
# moves its own rows from `merged_id` to `survivor_id` (deduplicating); it decides nothing
# and takes no lock. An exception in one rolls the whole merge back, so no merge ever
# loses another app's rows. Workflows registers one from its AppConfig.ready().


@dataclass(frozen=True)
class ContactsMerged:
    """One merge, as its listeners see it: all ids, nothing to load."""

    merge_id: int
    survivor_id: int
    merged_id: int
    at: dt.datetime


MergeListener = Callable[[ContactsMerged], dict[str, int]]
_merge_listeners: list[MergeListener] = []


def register_merge_listener(listener: MergeListener) -> None:
    if listener not in _merge_listeners:
        _merge_listeners.append(listener)


def unregister_merge_listener(listener: MergeListener) -> None:
    if listener in _merge_listeners:
        _merge_listeners.remove(listener)


def notify_contacts_merging(merge: ContactsMerged) -> dict[str, int]:
    """Run the merge listeners inside the merge's transaction; returns the rows they moved,
    by kind, for the merge's record."""
    moved: dict[str, int] = {}
    for listener in list(_merge_listeners):
        moved.update(listener(merge) or {})
    return moved
