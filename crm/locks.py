"""Every row lock Marketable takes, in one place, and the one order they are taken in.

A transaction takes its locks in this order, skipping any it does not need, and never
takes an earlier one after a later one:

1. **the usage lock** (`lock_usage`: contacts' one `UsageState` row). Every status change
   takes it first; so does every write that may make a contact marketing (public intake,
   a connected app's batch, an import), before it touches any contact. The close takes it
   in a transaction of its own, to wait for the changes under way, and then the
   subscription without it; the rollover takes it once per chunk of contacts.
2. **contact rows, ordered by id** (`lock_contacts`, `lock_contact_by_email`).
3. **the rest**, one row each: the subscription (`lock_billing`), a held change
   (`lock_approval`), an import, a marketing email, a connected app, a workflow run
   (then, in a run or an import shared by the workers, the row of the range being marked
   done: an UPDATE, in workflows/runs.py and contacts/imports/shared.py).

Two transactions that follow the order can wait for each other but never deadlock.
Nothing else in the code calls `select_for_update`. On SQLite these are no-ops: its
transactions are IMMEDIATE, so writers are serialised anyway.

Models are looked up by label so this module depends on no app (every app calls it).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.apps import apps

from crm.rows import row_get_or_create


def _model(label: str):
    return apps.get_model(label)


def lock_usage():
    """The usage lock: contacts' one `UsageState` row (created on first use).

    One statement once the row exists (the first change creates it): every status change
    and every intake starts here.
    """
    state = _model("contacts.UsageState")
    row = state.objects.select_for_update().filter(pk=1).first()
    if row is None:
        row_get_or_create(state, lookup={"pk": 1})
        row = state.objects.select_for_update().get(pk=1)
    return row


def lock_contacts(ids: Iterable[int]) -> list[int]:
    """Lock these contacts' rows in id order; returns the ids that exist."""
    contact = _model("contacts.Contact")
    ids = sorted({int(pk) for pk in ids})
    if not ids:
        return []
    return list(
        contact.objects.select_for_update()
        .filter(pk__in=ids)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def lock_contact_by_email(email: str):
    """The contact with this (normalised) email, locked, or None."""
    contact = _model("contacts.Contact")
    return contact.objects.select_for_update().filter(email=email).first()


def lock_contact(pk: int):
    """One contact, locked, or None."""
    return _model("contacts.Contact").objects.select_for_update().filter(pk=pk).first()


def _lock_one(label: str, pk):
    return _model(label).objects.select_for_update().get(pk=pk)


def lock_billing():
    """The subscription row: serialises closes and decisions on held changes."""
    subscription = _model("billing.Subscription")
    subscription.load()
    return _lock_one("billing.Subscription", subscription.SINGLETON_PK)


def lock_approval(pk: int):
    """A change the guardrails held, while someone decides it."""
    return _lock_one("contacts.PendingApproval", pk)


def lock_import(pk: int):
    return _lock_one("contacts.ContactImport", pk)


def lock_marketing_email(pk: int):
    return _lock_one("contacts.MarketingEmail", pk)


def lock_connected_app(pk: int):
    return _lock_one("contacts.ConnectedApp", pk)


def lock_workflow_run(pk: int):
    return _lock_one("workflows.WorkflowRun", pk)
