"""Intake: every way a contact arrives from outside (DESIGN §1.3).

Our forms, external forms, chatflows, connected apps and ads leads create or update a
contact by normalised email through `contact_intake` (one contact) or
`connected_app_contacts_upsert` (a batch, set-based), and both decide a new contact's
status with `contacts_creation_policy`. An existing contact is never downgraded; only a
form set to upgrade makes an existing non-marketing contact marketing, with the form
named in the ledger.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from contacts.engagement.models import EngagementType
from contacts.engagement.services import engagement_record
from contacts.hooks import (
    contacts_changed,
)
from contacts.intake.models import (
    AdAccount,
    AdLead,
    Chatflow,
    ConnectedApp,
    Form,
    FormSubmission,
)
from contacts.models import (
    Contact,
    MarketingStatus,
    Source,
    SourceKind,
    StatusSourceType,
    normalise_email,
)
from contacts.services import (
    CreationDecision,
    _contact_insert,
    contact_update,
    contacts_creation_policy,
    source_create,
)
from contacts.status.results import ChangeHeld, StatusError, StatusSource
from contacts.status.rules import is_settled
from contacts.status.services import contacts_set_marketing
from crm.locks import lock_connected_app, lock_contact_by_email, lock_usage
from crm.models import Account
from crm.rows import row_get_or_create

#
# Every way a contact arrives from outside — our forms, external forms, chatflows,
# connected apps, ads leads — creates or updates it by normalised email through
# `contact_intake` (one contact) or `connected_app_contacts_upsert` (a batch, set-based),
# and both decide a new contact's status with `contacts_creation_policy`. An existing
# contact is never downgraded; only a form set to upgrade (DESIGN §1.3) makes an
# existing non-marketing contact marketing, with the form named in the ledger.

# A connected app's batch: at most this many contacts a request.
INTAKE_BATCH_MAX = 10_000
# Emails per `email IN (…)` lookup: well under SQLite's variable limit, ~100 KB of text.
INTAKE_LOOKUP_CHUNK = 2_000
# Rows per INSERT / UPDATE statement of a batch upsert.
INTAKE_WRITE_BATCH = 1_000
# An ad account's webhook: at most this many leads a request (each is its own transaction).
ADS_BATCH_MAX = 500
# The contact fields a connected app or an ads lead may set (besides email).
INTAKE_FIELDS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "company",
    "phone",
    "lifecycle_stage",
    "lead_status",
    "contact_type",
)
EXTERNAL_FORMS_SOURCE_NAME = "External forms"


class IntakeError(StatusError):
    """An intake request that cannot be taken as a whole (the message is for the caller)."""


@dataclass
class IntakeResult:
    contact: Contact
    created: bool
    upgraded: bool
    updated_fields: list[str]
    decision: CreationDecision
    replayed: bool = False
    # Why the marketing status this intake would have given waits for approval, if it does.
    held: str = ""


def _changed_values(contact: Contact, fields: dict) -> dict:
    """The given fields whose value differs; an empty value never overwrites a stored one."""
    return {
        name: value
        for name, value in fields.items()
        if value not in ("", None) and getattr(contact, name) != value
    }


def contact_intake(
    *,
    email: str,
    source: Source,
    channel: StatusSource,
    channel_marketing: bool | None,
    upgrade_existing: bool = False,
    actor=None,
    fields: dict | None = None,
) -> IntakeResult:
    """Create or update one contact by normalised email, from an intake channel.

    A new contact records `source` and gets the status `contacts_creation_policy`
    decides (the ledger names `channel`). An existing contact keeps its source; its
    non-empty `fields` are updated; its status is never lowered, and is raised only
    when `upgrade_existing` and the channel creates marketing contacts (the ledger row
    names the channel). Two concurrent intakes of a new email: one creates, the other
    updates. Past the guardrails the contact is still stored (non-marketing) and its
    marketing status waits for approval: `held` says so.
    """
    fields = dict(fields or {})
    decision = contacts_creation_policy(
        source=source, channel_marketing=channel_marketing, channel=channel
    )
    email = normalise_email(email)
    # The contact it would create, checked before the lock: the check reads nothing stored
    # (uniqueness is the index's job: a concurrent intake may win the insert), and every
    # statement under the usage lock keeps the other intakes and status changes waiting.
    # Its error counts only if the contact is new. The table's two checks (a lower-case
    # email, a known status) hold by construction here, so they cost no query.
    new_contact = Contact(email=email, source=source, **fields)
    try:
        new_contact.full_clean(
            exclude=["source"], validate_unique=False, validate_constraints=False
        )
        invalid = None
    except ValidationError as error:
        invalid = error
    with transaction.atomic():
        # The usage lock before the contact row (crm.locks): the status change below takes it.
        lock_usage()
        contact = lock_contact_by_email(email)
        if contact is None:
            if invalid is not None:
                raise invalid
            contact = new_contact
            try:
                # The insert's own savepoint undoes it if a concurrent intake won.
                held = _contact_insert(contact, decision, actor=actor)
            except ValidationError:
                # Created meanwhile by a concurrent intake: update it instead.
                contact = lock_contact_by_email(email)
            else:
                contacts_changed([contact.pk])  # event-triggered workflows, after commit
                return IntakeResult(
                    contact=contact,
                    created=True,
                    upgraded=False,
                    updated_fields=[],
                    decision=decision,
                    held=held,
                )
        changed = _changed_values(contact, fields)
        if changed:
            contact_update(contact=contact, **changed)
        upgraded, held = False, ""
        if (
            upgrade_existing
            and decision.marketing
            and not is_settled(contact.marketing_status, contact.marketing_until)
        ):
            try:
                result = contacts_set_marketing(
                    contacts=contact, source=decision.status_source, actor=actor, guarded=True
                )
            except ChangeHeld as error:
                held = str(error)
            else:
                upgraded = bool(result.changed or result.cancelled)
                contact.refresh_from_db()
    return IntakeResult(
        contact=contact,
        created=False,
        upgraded=upgraded,
        updated_fields=sorted(changed),
        decision=decision,
        held=held,
    )


def _owned_source(*, kind: str, name: str, default_marketing: bool) -> Source:
    """A new Source for a form, chatflow, app or ad account (a free name is found)."""
    base = name[:190]
    candidate, n = base, 1
    while Source.objects.filter(name=candidate).exists():
        n += 1
        candidate = f"{base} ({n})"
    return source_create(name=candidate, kind=kind, default_marketing=default_marketing)


def _sync_source_default(source: Source, marketing: bool) -> None:
    # The Source shows the channel's own setting; the channel's value is what the policy reads.
    if source.default_marketing != marketing:
        Source.objects.filter(pk=source.pk).update(default_marketing=marketing)
        source.default_marketing = marketing


@dataclass
class SubmissionResult:
    submission: FormSubmission | None
    intake: IntakeResult | None
    replayed: bool = False
    discarded: bool = False  # the honeypot was filled: nothing stored


def form_field_specs(form: Form) -> list[dict]:
    """The form's asked fields as [{"name", "required", "label"}], in order."""
    specs = []
    for item in form.fields or []:
        item = {"name": item} if isinstance(item, str) else item
        specs.append(
            {
                "name": item["name"],
                "required": bool(item.get("required", False)),
                "label": item.get("label") or "",
            }
        )
    return specs


def form_creates_marketing(form: Form) -> bool:
    """The form's own setting, or the account's default for forms."""
    if form.create_as_marketing is not None:
        return form.create_as_marketing
    return Account.load().forms_create_marketing


def form_status_source(form: Form) -> StatusSource:
    return StatusSource(StatusSourceType.FORM, id=str(form.pk), name=form.name)


def form_save(*, form: Form) -> Form:
    """Create or change a form; a new one gets its Source (kind form)."""
    form.full_clean(exclude=["source"])
    form.fields = form_field_specs(form)
    with transaction.atomic():
        if form.source_id is None:
            form.source = _owned_source(
                kind=SourceKind.FORM, name=f"Form: {form.name}", default_marketing=True
            )
        form.save()
        _sync_source_default(form.source, form_creates_marketing(form))
    return form


def _submit(
    *,
    form: Form | None,
    source: Source,
    channel: StatusSource,
    marketing: bool,
    upgrade: bool,
    data: dict,
    consent: bool | None,
    submission_id: str | None,
    external_form: str = "",
    page_url: str = "",
    at: dt.datetime | None = None,
) -> SubmissionResult:
    """One form submission: the contact, its FormSubmission and a FORM_SUBMISSION event,
    all or nothing. A `submission_id` already stored for this form (ours, or the same
    external form) is a retry: the first submission is returned and nothing changes."""
    now = at or timezone.now()
    fields = {name: value for name, value in data.items() if name != "email"}
    external_form = external_form[:200]
    intake: IntakeResult | None = None

    def store() -> FormSubmission:
        nonlocal intake
        intake = contact_intake(
            email=data["email"],
            source=source,
            channel=channel,
            channel_marketing=marketing,
            upgrade_existing=upgrade,
            fields=fields,
        )
        submission = FormSubmission.objects.create(
            form=form,
            external_form=external_form,
            page_url=page_url[:1000],
            contact=intake.contact,
            data={k: v for k, v in data.items() if v not in ("", None)},
            consent=consent,
            created_contact=intake.created,
            upgraded=intake.upgraded,
            submission_id=submission_id or "",
            submitted_at=now,
        )
        engagement_record(
            contact=intake.contact,
            type=EngagementType.FORM_SUBMISSION,
            at=now,
            external_id=f"form-submission:{submission.pk}",
            properties={
                "form_id": form.pk if form else None,
                "form_name": form.name if form else external_form,
                "page_url": page_url,
            },
        )
        return submission

    if not submission_id:  # no id, no retry to recognise
        with transaction.atomic():
            return SubmissionResult(submission=store(), intake=intake)
    # formsubmission_once_per_form / _once_per_external_form: the same id sent twice at
    # once stores one submission; the other returns it.
    submission, created = row_get_or_create(
        FormSubmission,
        lookup={"form": form, "external_form": external_form, "submission_id": submission_id},
        create=store,
    )
    if not created:
        return SubmissionResult(submission=submission, intake=None, replayed=True)
    return SubmissionResult(submission=submission, intake=intake)


def form_submit(
    *,
    form: Form,
    data: dict,
    consent: bool | None = None,
    submission_id: str | None = None,
    page_url: str = "",
    at: dt.datetime | None = None,
) -> SubmissionResult:
    """A visitor's submission of one of our forms (`data`: email and the asked fields, cleaned).

    New contacts get the form's setting (or the account's default). With `upgrade_existing`,
    an existing non-marketing contact becomes marketing, logged with the form as source.
    A form with an optional consent checkbox left unticked never makes anyone marketing.
    """
    marketing = form_creates_marketing(form)
    if form.consent_label and not consent:
        marketing = False
    return _submit(
        form=form,
        source=form.source,
        channel=form_status_source(form),
        marketing=marketing,
        upgrade=marketing and form.upgrade_existing,
        data=data,
        consent=consent if form.consent_label else None,
        submission_id=submission_id,
        page_url=page_url,
        at=at,
    )


def external_forms_source() -> Source:
    """The one source of every external form, made on first use (concurrent first
    submissions all get the row one of them inserted)."""
    return row_get_or_create(
        Source,
        lookup={"name": EXTERNAL_FORMS_SOURCE_NAME},
        defaults={"kind": SourceKind.EXTERNAL_FORM, "default_marketing": True},
    )[0]


def external_form_submit(
    *,
    form_identifier: str,
    data: dict,
    page_url: str = "",
    submission_id: str | None = None,
    at: dt.datetime | None = None,
) -> SubmissionResult:
    """A submission of an external (non-native) form: one account setting decides, and the
    same upgrade rule as our forms applies."""
    marketing = Account.load().external_forms_marketing
    source = external_forms_source()
    _sync_source_default(source, marketing)
    return _submit(
        form=None,
        source=source,
        channel=StatusSource(
            StatusSourceType.FORM,
            id=f"external:{form_identifier}"[:64],
            name=f"External form “{form_identifier}”"[:200],
        ),
        marketing=marketing,
        upgrade=marketing,
        data=data,
        consent=None,
        submission_id=submission_id,
        external_form=form_identifier,
        page_url=page_url,
        at=at,
    )


def chatflow_save(*, chatflow: Chatflow) -> Chatflow:
    chatflow.full_clean(exclude=["source"])
    with transaction.atomic():
        if chatflow.source_id is None:
            chatflow.source = _owned_source(
                kind=SourceKind.CHATFLOW, name=f"Chatflow: {chatflow.name}", default_marketing=False
            )
        chatflow.save()
        _sync_source_default(chatflow.source, chatflow.marketing)
    return chatflow


def chatflow_intake(
    *,
    chatflow: Chatflow,
    data: dict,
    conversation_id: str | None = None,
    at: dt.datetime | None = None,
) -> IntakeResult | None:
    """A chat visitor who left an email: the contact (the chatflow's setting for a new one,
    never an upgrade) and a CHAT event. A known conversation id changes nothing (None)."""
    from contacts.engagement.models import EngagementEvent

    external_id = f"chat:{chatflow.pk}:{conversation_id}"[:200] if conversation_id else None
    if external_id and EngagementEvent.objects.filter(external_id=external_id).exists():
        return None
    now = at or timezone.now()
    with transaction.atomic():
        intake = contact_intake(
            email=data["email"],
            source=chatflow.source,
            channel=StatusSource(
                StatusSourceType.CHATFLOW, id=str(chatflow.pk), name=chatflow.name
            ),
            channel_marketing=chatflow.marketing,
            fields={name: value for name, value in data.items() if name != "email"},
        )
        recorded = engagement_record(
            contact=intake.contact,
            type=EngagementType.CHAT,
            at=now,
            external_id=external_id,
            properties={"chatflow_id": chatflow.pk, "chatflow_name": chatflow.name},
        )
        if not recorded:  # the same conversation, concurrently: undo this one
            transaction.set_rollback(True)
            return None
    return intake


TOKEN_BYTES = 32


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def intake_token_issue(*, holder: ConnectedApp | AdAccount) -> str:
    """A new secret for the holder (the old one stops working). Returned once, stored hashed."""
    prefix = "mk_app_" if isinstance(holder, ConnectedApp) else "mk_ads_"
    token = prefix + secrets.token_urlsafe(TOKEN_BYTES)
    holder.token_hash = token_digest(token)
    holder.token_hint = token[:12]
    holder.token_created_at = timezone.now()
    if holder.pk:
        type(holder).objects.filter(pk=holder.pk).update(
            token_hash=holder.token_hash,
            token_hint=holder.token_hint,
            token_created_at=holder.token_created_at,
        )
    return token


def intake_token_holder(*, model: type[ConnectedApp] | type[AdAccount], token: str):
    """The active holder of this token, or None (token_hash unique index)."""
    if not token:
        return None
    return model.objects.filter(token_hash=token_digest(token), is_active=True).first()


def connected_app_create(
    *, name: str, marketing: bool = False, two_way_sync: bool = False
) -> tuple[ConnectedApp, str]:
    """A connected app and its token (shown once)."""
    with transaction.atomic():
        app = ConnectedApp(name=name, two_way_sync=two_way_sync)
        token = intake_token_issue(holder=app)
        app.source = _owned_source(
            kind=SourceKind.INTEGRATION, name=f"App: {name}", default_marketing=False
        )
        app.full_clean(exclude=["token_hash"])
        app.save()
        if marketing:
            connected_app_set_marketing(app=app, marketing=True)
    return app, token


def connected_app_set_marketing(*, app: ConnectedApp, marketing: bool) -> ConnectedApp:
    """Switch the app's marketing setting. On: contacts it creates from now on are marketing
    (the time is recorded; earlier contacts stay as they are). Off: the time is cleared."""
    now = timezone.now()
    with transaction.atomic():
        locked = lock_connected_app(app.pk)
        if locked.marketing != marketing:
            locked.marketing = marketing
            locked.marketing_enabled_at = now if marketing else None
            locked.save(update_fields=["marketing", "marketing_enabled_at", "updated_at"])
            _sync_source_default(locked.source, marketing)
    app.marketing, app.marketing_enabled_at = locked.marketing, locked.marketing_enabled_at
    return app


def connected_app_update(
    *, app: ConnectedApp, name: str, two_way_sync: bool, is_active: bool, marketing: bool
) -> ConnectedApp:
    """Change an app's name, sync and active flags, and switch its marketing setting (through
    `connected_app_set_marketing`, which records when it was switched on)."""
    app.name, app.two_way_sync, app.is_active = name, two_way_sync, is_active
    app.full_clean(exclude=["token_hash", "source", "marketing", "marketing_enabled_at"])
    with transaction.atomic():
        ConnectedApp.objects.filter(pk=app.pk).update(
            name=name, two_way_sync=two_way_sync, is_active=is_active, updated_at=timezone.now()
        )
        connected_app_set_marketing(app=app, marketing=marketing)
    return app


@dataclass
class BatchItemResult:
    index: int
    email: str
    status: str  # created | updated | unchanged | error
    id: int | None = None
    marketing_status: str | None = None
    changed_fields: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


@dataclass
class BatchResult:
    items: list[BatchItemResult]
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: int = 0
    marketing: int = 0  # new contacts made marketing
    marketing_held: str = ""  # the guardrails held making them marketing
    reason: str = ""


def _intake_field_errors(item) -> tuple[dict, list[str]]:
    """Check one incoming contact against the model's own field rules (no query)."""
    from django.core.exceptions import ValidationError as DjangoValidationError

    if not isinstance(item, dict):
        return {}, ["Each contact must be an object with at least an email."]
    messages: list[str] = []
    unknown = sorted(set(item) - {"email", *INTAKE_FIELDS})
    if unknown:
        messages.append(
            f"Unknown fields: {', '.join(map(str, unknown))} "
            f"(allowed: email, {', '.join(INTAKE_FIELDS)})."
        )
    cleaned: dict = {}
    raw_email = item.get("email")
    if not isinstance(raw_email, str) or not raw_email.strip():
        messages.append("email: this field is required.")
    else:
        try:
            cleaned["email"] = Contact._meta.get_field("email").clean(
                normalise_email(raw_email), None
            )
        except DjangoValidationError as error:
            messages.extend(f"email: {m}" for m in error.messages)
    for name in INTAKE_FIELDS:
        if name not in item or item[name] in (None, ""):
            continue
        value = item[name]
        if not isinstance(value, str):
            messages.append(f"{name}: must be text.")
            continue
        try:
            cleaned[name] = Contact._meta.get_field(name).clean(value.strip(), None)
        except DjangoValidationError as error:
            messages.extend(f"{name}: {m}" for m in error.messages)
    return cleaned, messages


def connected_app_contacts_upsert(
    *, app: ConnectedApp, items: list, at: dt.datetime | None = None
) -> BatchResult:
    """Create or update up to INTAKE_BATCH_MAX contacts by normalised email, set-based.

    One lookup query a chunk of emails, `bulk_create` for the new contacts, `bulk_update`
    for the changed ones, and one guarded `contacts_set_marketing` for every new contact
    the app's setting makes marketing (existing contacts are never downgraded, nor
    upgraded). Retrying the same batch finds every contact unchanged and writes nothing.
    """
    if len(items) > INTAKE_BATCH_MAX:
        raise IntakeError(f"At most {INTAKE_BATCH_MAX:,} contacts a request; got {len(items):,}.")
    app = ConnectedApp.objects.select_related("source").get(pk=app.pk)  # the setting now
    channel = StatusSource(StatusSourceType.INTEGRATION, id=str(app.pk), name=app.name)
    decision = contacts_creation_policy(
        source=app.source, channel_marketing=app.marketing, channel=channel
    )
    results: list[BatchItemResult] = []
    wanted: dict[str, tuple[int, dict]] = {}
    for index, item in enumerate(items):
        cleaned, messages = _intake_field_errors(item)
        email = cleaned.get("email", "")
        if not messages and email in wanted:
            messages.append(f"The same email as item {wanted[email][0]} of this batch.")
        if messages:
            raw = item.get("email") if isinstance(item, dict) else None
            results.append(
                BatchItemResult(
                    index=index,
                    email=raw if isinstance(raw, str) else "",
                    status="error",
                    messages=messages,
                )
            )
            continue
        wanted[email] = (index, {k: v for k, v in cleaned.items() if k != "email"})
        results.append(BatchItemResult(index=index, email=email, status="unchanged"))
    batch = BatchResult(items=results, reason=decision.reason)
    # A concurrent writer may create one of our new emails between lookup and insert: the
    # unique index refuses the insert, and the retry finds it as existing.
    for attempt in range(3):
        try:
            with transaction.atomic():
                lock_usage()  # before any contact row: the lock order of crm.locks
                _upsert(app, wanted, results, batch, decision, at=at)
            break
        except IntegrityError:
            if attempt == 2:
                raise
            for result in results:
                if result.status != "error":
                    result.status, result.changed_fields = "unchanged", []
                    result.id = result.marketing_status = None
            batch.marketing, batch.marketing_held = 0, ""
    for result in results:
        counter = "errors" if result.status == "error" else result.status
        setattr(batch, counter, getattr(batch, counter) + 1)
    contacts_changed(r.id for r in results if r.status in ("created", "updated") and r.id)
    return batch


def _upsert(app, wanted: dict, results: list, batch: BatchResult, decision, *, at) -> None:
    now = at or timezone.now()
    emails = list(wanted)
    existing: dict[str, Contact] = {}
    for start in range(0, len(emails), INTAKE_LOOKUP_CHUNK):
        chunk = emails[start : start + INTAKE_LOOKUP_CHUNK]
        # contacts_contact email unique index
        for contact in Contact.objects.filter(email__in=chunk).only(
            "id", "email", "marketing_status", "marketing_until", *INTAKE_FIELDS
        ):
            existing[contact.email] = contact
    new: list[Contact] = []
    changed: list[Contact] = []
    changed_names: set[str] = set()
    reason = decision.status_source
    for email, (index, fields) in wanted.items():
        result = results[index]
        contact = existing.get(email)
        if contact is None:
            contact = Contact(
                email=email,
                source_id=app.source_id,
                # The policy's reason whatever the status: a marketing contact's upgrade
                # below writes the same one, and one held by the guardrails keeps it.
                marketing_reason_type=reason.type,
                marketing_reason_id=reason.id,
                marketing_reason_name=reason.name[:200],
                **fields,
            )
            new.append(contact)
            result.status = "created"
            continue
        values = _changed_values(contact, fields)
        result.id = contact.pk
        result.marketing_status = contact.effective_status(now)
        if values:
            for name, value in values.items():
                setattr(contact, name, value)
            contact.updated_at = now
            changed.append(contact)
            changed_names.update(values)
            result.status, result.changed_fields = "updated", sorted(values)
    # Ids come back from INSERT … RETURNING (PostgreSQL, SQLite ≥ 3.35).
    Contact.objects.bulk_create(new, batch_size=INTAKE_WRITE_BATCH)
    if changed:
        Contact.objects.bulk_update(
            changed, [*sorted(changed_names), "updated_at"], batch_size=INTAKE_WRITE_BATCH
        )
    new_status = MarketingStatus.NON_MARKETING
    if decision.marketing and new:
        try:
            contacts_set_marketing(
                contacts=[contact.pk for contact in new],
                source=decision.status_source,
                guarded=True,  # the hard cap and the per-operation limit
            )
        except ChangeHeld as held:
            batch.marketing_held = str(held)
        else:
            batch.marketing = len(new)
            new_status = MarketingStatus.MARKETING
    for contact in new:
        result = results[wanted[contact.email][0]]
        result.id, result.marketing_status = contact.pk, new_status


def ad_account_create(*, name: str, platform: str, marketing: bool = True) -> tuple[AdAccount, str]:
    """An ad account and its webhook token (shown once)."""
    with transaction.atomic():
        account = AdAccount(name=name, platform=platform, marketing=marketing)
        token = intake_token_issue(holder=account)
        account.source = _owned_source(
            kind=SourceKind.ADS, name=f"Ads: {name}", default_marketing=marketing
        )
        account.full_clean(exclude=["token_hash"])
        account.save()
    return account, token


def ad_account_save(*, ad_account: AdAccount) -> AdAccount:
    with transaction.atomic():
        ad_account.full_clean(exclude=["token_hash"])
        ad_account.save()
        _sync_source_default(ad_account.source, ad_account.marketing)
    return ad_account


def ad_lead_receive(
    *,
    ad_account: AdAccount,
    lead_id: str,
    data: dict,
    properties: dict | None = None,
    at: dt.datetime | None = None,
) -> tuple[AdLead, IntakeResult | None]:
    """One lead, once per (ad account, platform lead id): the contact (the account's setting
    for a new one, never an upgrade), an AdLead row and an AD_CLICK event. A lead id already
    received returns its row and None, changing nothing."""
    now = at or timezone.now()
    fields = {name: value for name, value in data.items() if name != "email"}
    intake: IntakeResult | None = None

    def store() -> AdLead:
        nonlocal intake
        intake = contact_intake(
            email=data["email"],
            source=ad_account.source,
            channel=StatusSource(StatusSourceType.ADS, id=str(ad_account.pk), name=ad_account.name),
            channel_marketing=ad_account.marketing,
            fields=fields,
        )
        lead = AdLead.objects.create(
            ad_account=ad_account,
            lead_id=lead_id,
            contact=intake.contact,
            created_contact=intake.created,
            data={**data, "properties": properties or {}},
            received_at=now,
        )
        engagement_record(
            contact=intake.contact,
            type=EngagementType.AD_CLICK,
            at=now,
            external_id=f"ad-lead:{ad_account.pk}:{lead_id}"[:200],
            properties={"ad_account_id": ad_account.pk, "lead_id": lead_id},
        )
        return lead

    # adlead_once_per_account: a lead sent twice, even at once, is stored once.
    lead, created = row_get_or_create(
        AdLead, lookup={"ad_account": ad_account, "lead_id": lead_id}, create=store
    )
    return lead, intake if created else None
