"""Writes of the HubSpot-compatible API: create, update, upsert and archive contacts.

They compose contacts' own services and add nothing to their rules: a new contact is made
by `contact_create` (its status by the creation policy), fields change through
`contact_update`, and `hs_marketable_status` through the status service
(`contacts_set_marketing`, guarded; `contacts_set_non_marketing`, deferred to the next
update date) with the API as the ledger's source. Deleting is `contacts_delete`.

A batch is one transaction in which each input stands alone: an input that fails is
rolled back to its own savepoint and reported, the others are kept. Locks follow
crm.locks' order — the usage lock first when any input may change a status (creating
may), then the existing contacts' rows by id — and the status changes of a batch are one
service call per direction, after the fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction

from contacts.hubspot.mapping import ContactWrite
from contacts.models import Contact, StatusSourceType, normalise_email
from contacts.selectors import contact_list, source_for_manual_entry
from contacts.services import contact_create, contact_update
from contacts.status.results import ChangeHeld, StatusSource
from contacts.status.services import (
    contacts_delete,
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from crm.locks import lock_contacts, lock_usage


@dataclass
class WriteOutcome:
    """What became of one input: its contact, or why not.

    `error` is the contact's validation error (by field); `existing_id` names the contact
    that already has the email asked for; `held` is the guardrails' message when an
    upgrade to marketing waits for approval (the rest of the input was written).
    """

    contact: Contact | None = None
    created: bool = False
    missing: bool = False
    error: ValidationError | None = None
    existing_id: int | None = None
    held: str = ""

    @property
    def ok(self) -> bool:
        return self.contact is not None


@dataclass
class _Pending:
    """Inputs whose fields are written and whose status change is still to make."""

    marketing: list[int] = field(default_factory=list)
    non_marketing: list[int] = field(default_factory=list)
    outcomes: dict[int, list[WriteOutcome]] = field(default_factory=dict)

    def add(self, contact: Contact, write: ContactWrite, outcome: WriteOutcome) -> None:
        if write.marketing is None:
            return
        (self.marketing if write.marketing else self.non_marketing).append(contact.pk)
        self.outcomes.setdefault(contact.pk, []).append(outcome)


def hubspot_status_source(user) -> StatusSource:
    """The ledger's source of a change made through the HubSpot-compatible API."""
    return StatusSource(
        StatusSourceType.API, id=str(user.pk or ""), name=f"HubSpot API: {user.get_username()}"
    )


def _existing_email_owner(email: str, *, exclude: int | None = None) -> int | None:
    owners = Contact.objects.filter(email=normalise_email(email))
    if exclude is not None:
        owners = owners.exclude(pk=exclude)
    return owners.values_list("pk", flat=True).first()


def _email_conflict(error: ValidationError, email: str, *, exclude=None) -> int | None:
    """The contact that owns `email`, when `error` is about the email (a duplicate)."""
    if not hasattr(error, "error_dict") or "email" not in error.error_dict or not email:
        return None
    return _existing_email_owner(email, exclude=exclude)


def _create_one(write: ContactWrite, *, actor, source) -> WriteOutcome:
    fields = dict(write.fields)
    email = fields.pop("email", "")
    if not email:
        return WriteOutcome(error=ValidationError({"email": ["email is required."]}))
    try:
        contact = contact_create(
            email=email,
            source=source,
            actor=actor,
            marketing=write.marketing,
            status_source=hubspot_status_source(actor) if write.writes_status else None,
            **fields,
        )
    except ValidationError as error:
        existing = _email_conflict(error, email)
        return WriteOutcome(error=None if existing else error, existing_id=existing)
    return WriteOutcome(contact=contact, created=True, held=contact.marketing_held)


def _update_one(contact: Contact, write: ContactWrite, pending: _Pending) -> WriteOutcome:
    outcome = WriteOutcome(contact=contact)
    if write.fields:
        try:
            with transaction.atomic():
                contact_update(contact=contact, **write.fields)
        except ValidationError as error:
            existing = _email_conflict(error, write.fields.get("email", ""), exclude=contact.pk)
            return WriteOutcome(error=None if existing else error, existing_id=existing)
    pending.add(contact, write, outcome)
    return outcome


def _apply_status(pending: _Pending, *, actor) -> None:
    """The batch's status changes: one guarded set-marketing, one deferred set-non-marketing."""
    common = {"source": hubspot_status_source(actor), "actor": actor}
    if pending.marketing:
        try:
            contacts_set_marketing(contacts=pending.marketing, guarded=True, **common)
        except ChangeHeld as held:
            for pk in pending.marketing:
                for outcome in pending.outcomes[pk]:
                    outcome.held = str(held)
    if pending.non_marketing:
        contacts_set_non_marketing(contacts=pending.non_marketing, **common)


def _reload(outcomes: list[WriteOutcome]) -> None:
    """Read the written contacts back (their status and timestamps moved in SQL): one query."""
    ids = {o.contact.pk for o in outcomes if o.ok}
    fresh = contact_list().in_bulk(ids)
    for outcome in outcomes:
        if outcome.ok:
            outcome.contact = fresh[outcome.contact.pk]


def _update_locked(
    items: list[tuple[int, ContactWrite]], *, actor, pending: _Pending
) -> list[WriteOutcome]:
    existing = set(lock_contacts(pk for pk, _ in items))
    contacts = contact_list().in_bulk(existing)
    outcomes = []
    for pk, write in items:
        if pk not in contacts:
            outcomes.append(WriteOutcome(missing=True))
            continue
        outcomes.append(_update_one(contacts[pk], write, pending))
    return outcomes


def hubspot_contacts_create(*, writes: list[ContactWrite], actor) -> list[WriteOutcome]:
    """Create contacts from the manual-entry source ("created by hand or API"), each
    through `contact_create`: non-marketing unless the write asks for marketing (the
    caller checks the permission). One outcome per write, in order."""
    source = source_for_manual_entry()
    with transaction.atomic():
        lock_usage()  # creating may make a contact marketing (crm.locks)
        outcomes = [_create_one(write, actor=actor, source=source) for write in writes]
    return outcomes


def hubspot_contacts_update(*, items: list[tuple[int, ContactWrite]], actor) -> list[WriteOutcome]:
    """Update contacts by id: fields through `contact_update`, then the status changes
    asked for. A contact that no longer exists is `missing`."""
    with transaction.atomic():
        if any(write.writes_status for _, write in items):
            lock_usage()
        pending = _Pending()
        outcomes = _update_locked(items, actor=actor, pending=pending)
        _apply_status(pending, actor=actor)
        _reload(outcomes)
    return outcomes


def hubspot_contacts_upsert(*, items: list[tuple[str, ContactWrite]], actor) -> list[WriteOutcome]:
    """Create or update contacts by email: an existing one is updated, a new one created
    with that email (`created` says which)."""
    emails = [normalise_email(email) for email, _ in items]
    with transaction.atomic():
        lock_usage()  # creating may make a contact marketing (crm.locks)
        owners = dict(Contact.objects.filter(email__in=emails).values_list("email", "pk"))
        updates = [(owners[e], w) for e, (_, w) in zip(emails, items, strict=True) if e in owners]
        pending = _Pending()
        updated = iter(_update_locked(updates, actor=actor, pending=pending))
        source = source_for_manual_entry()
        outcomes = []
        for email, (_, write) in zip(emails, items, strict=True):
            if email in owners:
                outcomes.append(next(updated))
            else:
                create = ContactWrite(
                    fields={**write.fields, "email": email}, marketing=write.marketing
                )
                outcomes.append(_create_one(create, actor=actor, source=source))
        _apply_status(pending, actor=actor)
        _reload(outcomes)
    return outcomes


def hubspot_contacts_archive(*, ids: list[int], actor) -> int:
    """Delete contacts through the status service (a billable one lowers the live count
    at once; the ledger records it). Unknown ids are ignored. Returns how many went."""
    if not ids:
        return 0
    result = contacts_delete(contacts=ids, actor=actor, source=hubspot_status_source(actor))
    return result.changed
