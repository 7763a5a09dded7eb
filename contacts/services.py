"""Writes to contacts and sources: the creation rule, create, update, properties."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from contacts.hooks import (
    contacts_changed,
)
from contacts.models import (
    Contact,
    LeadStatus,
    LifecycleStage,
    Source,
    StatusSourceType,
    normalise_email,
)
from contacts.status.results import (
    ChangeHeld,
    LockedSourceError,
    MarketingNotPermitted,
    SourceInUse,
    StatusError,
    StatusSource,
    Target,
)
from contacts.status.rules import MARKETING_STATUS_PERMISSION, can_change_marketing_status
from contacts.status.services import contacts_set_marketing
from contacts.status.sql import as_target, target_chunks
from crm.locks import lock_usage


@dataclass(frozen=True)
class CreationDecision:
    """The status a new contact gets, what the ledger names as its reason, and why (for people)."""

    marketing: bool
    status_source: StatusSource
    reason: str


def contacts_creation_policy(
    *,
    source: Source,
    requested_marketing: bool | None = None,
    channel_marketing: bool | None = None,
    channel: StatusSource | None = None,
    requester: StatusSource | None = None,
    creator=None,
) -> CreationDecision:
    """The status of a new contact (DESIGN §1.3): the one rule every entry path applies.

    Admin and API create, forms (ours and external), chatflows, connected apps, ads
    leads and imports all ask here. `creator` is the person creating the contact by hand
    in the admin or the API (None for a channel, an import's own rule or a command). In
    order:

    1. A locked kind (mobile app, email logging, team inbox, documents, meetings, email
       extension) always creates non-marketing; asking for marketing raises
       `LockedSourceError`.
    2. A `creator` without contacts.change_marketing_status creates non-marketing — "created
       by hand" is non-marketing, and only a user with the permission may pick marketing,
       by asking or by picking a source whose default is marketing. Asking for marketing
       raises `MarketingNotPermitted`; the ledger names `requester`.
    3. `requested_marketing` — a permitted person's choice in the admin or API, an
       import's "set all as marketing" — wins; the ledger names `requester`.
    4. `channel_marketing` — the form's, chatflow's, app's or ad account's own setting
       (already resolved, e.g. a form's account-wide fallback); the ledger names `channel`.
    5. The source's `default_marketing`; the ledger names the source (CREATION).

    It reads only its arguments (and the creator's permissions).
    """
    label = f"“{source.name}” ({source.get_kind_display()})"
    creation = StatusSource(StatusSourceType.CREATION, id=str(source.pk or ""), name=source.name)
    if source.locked:
        if requested_marketing:
            raise LockedSourceError(
                f"Contacts from {label} are always non-marketing: that kind of source is locked."
            )
        return CreationDecision(
            marketing=False,
            status_source=channel or creation,
            reason=f"{label} is a locked source: its contacts are always non-marketing.",
        )
    if creator is not None and not can_change_marketing_status(creator):
        if requested_marketing:
            raise MarketingNotPermitted(
                "Creating a marketing contact needs the permission "
                f"{MARKETING_STATUS_PERMISSION}; without it a contact created by hand is "
                "non-marketing (leave out “marketing”)."
            )
        return CreationDecision(
            marketing=False,
            status_source=requester or creation,
            reason="Created by hand by a user who may not choose the marketing status: "
            "non-marketing, whatever the source's default.",
        )
    if requested_marketing is not None:
        return CreationDecision(
            marketing=requested_marketing,
            status_source=requester or channel or creation,
            reason=f"Chosen as {'marketing' if requested_marketing else 'non-marketing'} "
            "when it was created.",
        )
    if channel_marketing is not None:
        named = f"“{channel.name}”" if channel and channel.name else label
        return CreationDecision(
            marketing=channel_marketing,
            status_source=channel or creation,
            reason=f"{named} creates {'marketing' if channel_marketing else 'non-marketing'} "
            "contacts.",
        )
    return CreationDecision(
        marketing=source.default_marketing,
        status_source=creation,
        reason=f"The default of the source {label}: "
        f"{'marketing' if source.default_marketing else 'non-marketing'}.",
    )


def contact_reason_columns(reason: StatusSource) -> dict[str, str]:
    """A contact's reason columns (`marketing_reason_*`) naming `reason`, cut to their
    lengths. Set-based creators (an import's INSERT, the demo seeder's COPY) write these
    constant values, taken from the policy's decision, in every row they create."""
    return {
        "marketing_reason_type": reason.type,
        "marketing_reason_id": reason.id[:64],
        "marketing_reason_name": reason.name[:200],
    }


def _contact_insert(
    contact: Contact, decision: CreationDecision, *, actor, idempotency_key: str | None = None
) -> str:
    """Save a new contact with its decided status: marketing goes through the status service
    (one ledger row naming the reason); non-marketing records the reason on the contact only.

    Call with the usage lock held (crm.locks). Past the guardrails the contact stays
    non-marketing, with its reason, and its marketing status waits for approval: the
    returned message says so ("" when nothing waits).
    """
    for name, value in contact_reason_columns(decision.status_source).items():
        setattr(contact, name, value)
    _save_unique_email(contact)
    if not decision.marketing:
        return ""
    try:
        contacts_set_marketing(
            contacts=contact,
            source=decision.status_source,
            actor=actor,
            idempotency_key=idempotency_key,
            guarded=True,
        )
    except ChangeHeld as held:
        return str(held)
    contact.refresh_from_db()
    return ""


def contact_create(
    *,
    email: str,
    source: Source,
    actor=None,
    marketing: bool | None = None,
    status_source: StatusSource | None = None,
    idempotency_key: str | None = None,
    **fields,
) -> Contact:
    """Create a contact by hand; its status is decided by `contacts_creation_policy`.

    `marketing` is the creator's explicit choice (None: the source's default), and
    `status_source` who made it. `actor` is the person creating it (the admin's or the
    API's user): without contacts.change_marketing_status the contact is non-marketing
    and asking for marketing raises `MarketingNotPermitted`; no actor (a command, a test)
    is trusted. A locked source can never create a marketing contact. A duplicate email is
    a ValidationError (see `contact_intake` to create or update by email). Past the
    guardrails the contact is created non-marketing and `contact.marketing_held` says why
    its marketing status waits for approval.
    """
    decision = contacts_creation_policy(
        source=source, requested_marketing=marketing, requester=status_source, creator=actor
    )
    with transaction.atomic():
        lock_usage()  # before the new contact's row (crm.locks)
        contact = Contact(email=normalise_email(email), source=source, **fields)
        contact.full_clean(exclude=["source"])
        contact.marketing_held = _contact_insert(
            contact, decision, actor=actor, idempotency_key=idempotency_key
        )
        contacts_changed([contact.pk])  # event-triggered workflows, after commit
    return contact


CONTACT_EDITABLE_FIELDS = frozenset(
    {
        "email",
        "first_name",
        "last_name",
        "company",
        "phone",
        "lifecycle_stage",
        "lead_status",
        "contact_type",
        "unsubscribed",
        "hard_bounced",
        "lead_score",
        "last_engaged_at",
    }
)


def contact_update(*, contact: Contact, **fields) -> Contact:
    """Update a contact's ordinary fields. The status is not one of them."""
    unknown = set(fields) - CONTACT_EDITABLE_FIELDS
    if unknown:
        raise StatusError(f"These fields cannot be updated here: {', '.join(sorted(unknown))}.")
    for name, value in fields.items():
        setattr(contact, name, value)
    contact.full_clean(exclude=["source"])
    _save_unique_email(contact, update_fields=[*fields, "updated_at"])
    contacts_changed([contact.pk])  # event-triggered workflows, after commit
    return contact


def _save_unique_email(contact: Contact, **kwargs) -> None:
    """Save; a concurrent writer of the same email is reported like the form's own check."""
    from django.core.exceptions import ValidationError
    from django.db import IntegrityError

    try:
        with transaction.atomic():
            contact.save(**kwargs)
    except IntegrityError as error:
        if Contact.objects.filter(email=contact.email).exclude(pk=contact.pk).exists():
            raise ValidationError({"email": "A contact with this email already exists."}) from error
        raise


def _check_source_default(*, kind: str, default_marketing: bool) -> None:
    from django.core.exceptions import ValidationError

    if default_marketing and Source(kind=kind).locked:
        raise ValidationError(
            {
                "default_marketing": (
                    f"Sources of kind {kind!r} are locked: their contacts are always "
                    "non-marketing, so default_marketing must be false."
                )
            }
        )


def source_create(*, name: str, kind: str, default_marketing: bool | None = None) -> Source:
    """A source; its default is the kind's (DESIGN §1.3) unless given. Locked kinds refuse marketing."""
    default = Source.kind_default(kind) if default_marketing is None else default_marketing
    _check_source_default(kind=kind, default_marketing=default)
    source = Source(name=name, kind=kind, default_marketing=default)
    source.full_clean()
    source.save()
    return source


def source_update(*, source: Source, **fields) -> Source:
    unknown = set(fields) - {"name", "kind", "default_marketing"}
    if unknown:
        raise StatusError(f"These source fields cannot be updated: {', '.join(sorted(unknown))}.")
    for name, value in fields.items():
        setattr(source, name, value)
    _check_source_default(kind=source.kind, default_marketing=source.default_marketing)
    source.full_clean()
    source.save()
    return source


def source_delete(*, source: Source) -> None:
    if Contact.objects.filter(source=source).exists():
        raise SourceInUse(f"The source {source.name!r} still has contacts; it cannot be deleted.")
    source.delete()


# The properties a workflow action may set: plain CRM fields, never the status.
SETTABLE_PROPERTIES = {
    "lifecycle_stage": frozenset(LifecycleStage.values),
    "lead_status": frozenset({"", *LeadStatus.values}),
}


@dataclass
class PropertyChange:
    field: str
    value: str
    matched: int = 0
    changed: int = 0


def contacts_set_property(
    *, contacts: Target, field: str, value: str, at: dt.datetime | None = None
) -> PropertyChange:
    """Set the lifecycle stage or the lead status of a set of contacts, set-based.

    One UPDATE per id-range chunk, touching only the rows whose value differs (so a
    rerun changes nothing). Other fields — and the marketing status above all — are
    refused. It does not notify the contact listeners: a workflow's own writes do not
    trigger event workflows (no cascades or loops); the schedule picks them up.
    """
    if field not in SETTABLE_PROPERTIES:
        raise StatusError(
            f"Only {' and '.join(sorted(SETTABLE_PROPERTIES))} can be set this way, not {field!r}."
        )
    if value not in SETTABLE_PROPERTIES[field]:
        raise StatusError(f"{value!r} is not a valid {field.replace('_', ' ')}.")
    now = at or timezone.now()
    change = PropertyChange(field=field, value=value)
    with transaction.atomic():
        for chunk in target_chunks(as_target(contacts)):
            change.matched += chunk.queryset.order_by().count()
            change.changed += (
                Contact.objects.filter(pk__in=chunk.queryset.order_by().values("pk"))
                .exclude(**{field: value})
                .update(**{field: value, "updated_at": now})
            )
    return change
