"""Merging two contacts into one (DESIGN §1.2: a marketing contact "merged away").

`contacts_merge` keeps the survivor and deletes the merged-away contact, in one
transaction, under the lock order of crm.locks: the usage lock, then both contact rows in
id order. In order:

1. a retry is answered with the first merge's survivor: the same pair again, or the same
   idempotency key, finds its `MergedContact` record (even once the merged-away contact is
   gone) and changes nothing;
2. the status rule (contacts.merge.selectors: marketing if either was, pending only if
   both were) and the locked-source rule are checked before anything is written;
3. the merged-away contact's own rows move to the survivor, duplicates dropped (one list
   or audience membership per list or audience); other apps' rows move through the merge
   listeners of contacts.hooks (workflows' enrollments and rotation members);
4. the merged-away contact leaves through the status service (`contacts_delete`, the
   ledger naming the merge): a billable one lowers the live count at once. Only then does
   the survivor's status change, through the same service with the merge as its source;
   in that order the live count never rises above where it was, so the peak cannot move;
5. the survivor takes the chosen field values.

The ledger rows stay with the contact ids they were written for; the `MergedContact`
record lets the history of the survivor include those of the contacts merged into it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from contacts.hooks import ContactsMerged, contacts_changed, notify_contacts_merging
from contacts.merge.models import MergedContact
from contacts.merge.selectors import (
    NON_MARKETING,
    MergePreview,
    merge_preview,
    merge_survivor_of,
)
from contacts.models import Contact, StatusSourceType
from contacts.status.results import (
    LockedSourceError,
    MarketingNotPermitted,
    StatusError,
    StatusSource,
)
from contacts.status.rules import MARKETING_STATUS_PERMISSION, can_change_marketing_status
from contacts.status.services import (
    contacts_delete,
    contacts_set_marketing,
)
from crm.locks import lock_contacts, lock_usage


class MergeError(StatusError):
    """A merge that cannot be made; the message is meant for the user (a 400).
    `errors` maps a field name to its messages where one field is at fault."""

    def __init__(self, message: str, *, errors: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.errors = errors or {}


class MergeNotFound(MergeError):
    """A contact id that names no contact and no merged-away contact (a 404)."""


class MergeConflict(MergeError):
    """The same contact twice, a contact already merged into another one, or an
    idempotency key used for another merge (a 409)."""


@dataclass
class MergeResult:
    survivor: Contact
    merge: MergedContact
    replayed: bool = False


def _merge_source(record: MergedContact, name: str) -> StatusSource:
    return StatusSource(StatusSourceType.MERGE, id=str(record.pk), name=name[:200])


def _as_id(contact) -> int:
    return int(contact.pk if isinstance(contact, Contact) else contact)


def _replay(*, survivor_id: int, merged_id: int, idempotency_key: str | None) -> MergeResult | None:
    """The earlier merge this request repeats, or None; a conflicting one raises."""
    if idempotency_key:
        earlier = MergedContact.objects.filter(idempotency_key=idempotency_key).first()
        if earlier is not None and (earlier.survivor_id, earlier.merged_id) != (
            survivor_id,
            merged_id,
        ):
            raise MergeConflict(
                f"The idempotency key {idempotency_key!r} was already used for another merge."
            )
    record = MergedContact.objects.filter(merged_id=merged_id).first()
    if record is None:
        return None
    if record.survivor_id != survivor_id:
        raise MergeConflict(
            f"Contact {merged_id} was already merged into contact {record.survivor_id}."
        )
    # The survivor may have been merged away since: answer with where it lives now.
    survivor = Contact.objects.select_related("source").filter(
        pk=merge_survivor_of(contact_id=survivor_id)
    )
    found = survivor.first()
    if found is None:
        raise MergeNotFound(f"Contact {survivor_id}, the survivor of that merge, was deleted.")
    return MergeResult(survivor=found, merge=record, replayed=True)


def _refusals(preview: MergePreview, by) -> None:
    if preview.refusal:
        raise LockedSourceError(preview.refusal)
    if by is not None and preview.makes_marketing and not can_change_marketing_status(by):
        raise MarketingNotPermitted(
            f"This merge makes “{preview.survivor}” {preview.outcome_label}, which needs the "
            f"permission {MARKETING_STATUS_PERMISSION}."
        )


# The merged-away contact's own rows in contacts, and the field that may hold a duplicate
# once they move (None: any number per contact). Ledger rows stay where they are (see the
# module docstring); a duplicate of a row kept for the record (a marketing email's send)
# stays attached to the merged-away id, the others go with that contact.
def _own_relations():
    from contacts.engagement.models import EngagementEvent
    from contacts.imports.models import ImportedContact
    from contacts.intake.models import AdLead, FormSubmission
    from contacts.outreach.models import (
        AdAudienceMembership,
        Communication,
        ContactListMembership,
        EmailSend,
        Unsubscription,
    )

    return [
        ("engagement_events", EngagementEvent, None),
        ("form_submissions", FormSubmission, None),
        ("ad_leads", AdLead, None),
        ("list_memberships", ContactListMembership, "contact_list"),
        ("audience_memberships", AdAudienceMembership, "audience"),
        ("imported_contacts", ImportedContact, "contact_import"),
        ("email_sends", EmailSend, "email"),
        ("unsubscriptions", Unsubscription, None),
        ("communications", Communication, None),
    ]


def merge_move_rows(model, *, survivor_id: int, merged_id: int, unique_with: str | None) -> int:
    """Move `model`'s rows of `merged_id` to `survivor_id`; with `unique_with`, the rows whose
    value the survivor already has stay behind. Two statements, set-based. The number moved."""
    rows = model._default_manager.filter(contact_id=merged_id)
    if unique_with:
        taken = model._default_manager.filter(contact_id=survivor_id).values(unique_with)
        rows = rows.exclude(**{f"{unique_with}__in": taken})
    return rows.update(contact_id=survivor_id)


def _move_own_rows(*, survivor_id: int, merged_id: int, outcome: str) -> dict[str, int]:
    from contacts.outreach.models import AdAudienceMembership

    moved = {}
    for name, model, unique_with in _own_relations():
        if model is AdAudienceMembership and outcome == NON_MARKETING:
            # Ad audiences hold marketing contacts only (DESIGN §1.1).
            count = 0
        else:
            count = merge_move_rows(
                model, survivor_id=survivor_id, merged_id=merged_id, unique_with=unique_with
            )
        if count:
            moved[name] = count
    return moved


def _survivor_status(
    preview: MergePreview, record: MergedContact, *, survivor: Contact, merged: Contact, by, at
) -> None:
    """Bring the survivor to the outcome status through the status service (a ledger row
    naming the merge); nothing when it already has it."""
    if not preview.survivor_status_changes:
        return
    source = _merge_source(record, f"Merged with {merged.email}")
    key = f"merge:{record.pk}:survivor"
    # The only change a merge makes to the survivor is to marketing (a pending outcome
    # means both were pending, so the survivor already is): an upgrade, or a pending
    # downgrade cancelled.
    contacts_set_marketing(
        contacts=survivor.pk, source=source, actor=by, idempotency_key=f"{key}:marketing", at=at
    )


def _set_fields(survivor: Contact, merged: Contact, preview: MergePreview) -> None:
    for name, value in preview.values.items():
        setattr(survivor, name, value)
    survivor.unsubscribed = survivor.unsubscribed or merged.unsubscribed
    survivor.hard_bounced = survivor.hard_bounced or merged.hard_bounced
    survivor.lead_score = survivor.lead_score + merged.lead_score
    engaged = [d for d in (survivor.last_engaged_at, merged.last_engaged_at) if d]
    survivor.last_engaged_at = max(engaged) if engaged else None
    try:
        # After the merged-away contact is deleted: its email may be the one chosen.
        survivor.full_clean(exclude=["source"])
    except ValidationError as error:
        raise MergeError(
            "The merged contact would not be valid: "
            + " ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items()),
            errors=error.message_dict,
        ) from error
    survivor.save()


def contacts_merge(
    *,
    survivor: Contact | int,
    merged_away: Contact | int,
    values: dict | None = None,
    by=None,
    idempotency_key: str | None = None,
    at: dt.datetime | None = None,
) -> MergeResult:
    """Merge `merged_away` into `survivor` (see the module docstring); returns the survivor.

    `values` chooses fields (contacts.merge.selectors.MERGE_FIELDS: a value, or a source
    id); the rest keep the survivor's value, or the other's where the survivor's is empty.
    `by` is the person merging: when the merge changes the survivor's status toward
    marketing they need contacts.change_marketing_status (`MarketingNotPermitted`); no
    `by` (a command, a test) is trusted. Raises `MergeConflict` (the same contact twice,
    or one already merged elsewhere), `MergeNotFound`, `LockedSourceError` (the
    locked-source rule) or `MergeError` (bad values). A retry answers the first result
    with `replayed=True`.
    """
    survivor_id, merged_id = _as_id(survivor), _as_id(merged_away)
    if survivor_id == merged_id:
        raise MergeConflict("A contact cannot be merged with itself: choose two contacts.")
    with transaction.atomic():
        lock_usage()  # crm.locks: the usage lock first, then the contacts in id order
        replay = _replay(
            survivor_id=survivor_id, merged_id=merged_id, idempotency_key=idempotency_key
        )
        if replay is not None:
            return replay
        found = set(lock_contacts([survivor_id, merged_id]))
        missing = [pk for pk in (survivor_id, merged_id) if pk not in found]
        for pk in missing:
            if (went := merge_survivor_of(contact_id=pk)) != pk:
                raise MergeConflict(
                    f"Contact {pk} was already merged into contact {went}; merge with that "
                    "one instead."
                )
        if missing:
            raise MergeNotFound(
                f"No contact with the id {' or '.join(map(str, missing))}.",
            )
        contacts = Contact.objects.select_related("source").in_bulk([survivor_id, merged_id])
        keep, gone = contacts[survivor_id], contacts[merged_id]
        now = at or timezone.now()
        try:
            preview = merge_preview(survivor=keep, merged=gone, values=values, at=now)
        except ValueError as error:
            raise MergeError(str(error)) from error
        _refusals(preview, by)
        try:
            with transaction.atomic():
                record = MergedContact.objects.create(
                    survivor_id=survivor_id,
                    merged_id=merged_id,
                    merged_email=gone.email,
                    survivor_status=preview.survivor_status,
                    merged_status=preview.merged_status,
                    outcome_status=preview.outcome_status,
                    values=_recorded_values(preview),
                    idempotency_key=idempotency_key or None,
                    actor=by if getattr(by, "pk", None) else None,
                    merged_at=now,
                )
        except IntegrityError as error:
            # Only a merge of the same contact, committed meanwhile, can collide: the usage
            # lock serialises merges, so this is a retry that raced its first attempt.
            raise MergeConflict(f"Contact {merged_id} was already merged.") from error
        moved = _move_own_rows(
            survivor_id=survivor_id, merged_id=merged_id, outcome=preview.outcome_status
        )
        moved.update(
            notify_contacts_merging(
                ContactsMerged(
                    merge_id=record.pk, survivor_id=survivor_id, merged_id=merged_id, at=now
                )
            )
        )
        contacts_delete(
            contacts=merged_id,
            actor=by,
            source=_merge_source(record, f"Merged into {keep.email}"),
            idempotency_key=f"merge:{record.pk}:merged-away",
            at=now,
        )
        _survivor_status(preview, record, survivor=keep, merged=gone, by=by, at=now)
        keep.refresh_from_db()
        _set_fields(keep, gone, preview)
        record.moved = moved
        record.save(update_fields=["moved"])
        contacts_changed([survivor_id])  # event-triggered workflows, after commit
    return MergeResult(survivor=keep, merge=record)


def _recorded_values(preview: MergePreview) -> dict:
    """The fields that differed between the two contacts, as the survivor got them."""
    recorded = {}
    for item in preview.fields:
        if not item.differs:
            continue
        value = item.chosen
        recorded[item.name] = value.pk if item.name == "source" else value
    return recorded
