"""Outreach: marketing email and its send guard, unsubscribe, ad audiences, lists, and
non-marketing communications (DESIGN §1.1).

`marketing_email_send` starts a send (or, given `contacts`, sends to them now: workflows);
`marketing_email_deliver` is the only code that sends marketing email, and it asks the
guard (`contacts.outreach.selectors.marketing_recipients`) at every chunk. Non-marketing
communication: `communication_send`, to anyone, logged by type.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import asdict, dataclass

from django.db import connection, transaction
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from contacts.models import (
    Contact,
)
from contacts.services import contact_update
from contacts.status.results import Progress, Target
from contacts.status.rules import marketing_q
from contacts.status.sql import CONTACT_TABLE, as_target, sql_fill, sql_param, target_chunks
from crm import jobs
from crm.locks import lock_contact, lock_marketing_email
from crm.rows import row_get_or_create

logger = logging.getLogger(__name__)


#
# Marketing email: `marketing_email_send` starts a send (or, given `contacts`, sends to
# them now: workflows); `marketing_email_deliver` is the only code that sends marketing
# email, and it asks the guard (`contacts.selectors.marketing_recipients`) at every
# chunk. Non-marketing communication: `communication_send`, to anyone, logged by type.

# Recipients per chunk: claimed in one INSERT, sent over one mail connection, confirmed in
# one UPDATE. A worker killed mid-chunk leaves at most this many sends unconfirmed.
SEND_CHUNK_SIZE = 200
UNSUBSCRIBE_SALT = "contacts.unsubscribe"


class SendRefused(Exception):
    """A send the communication services refuse; the message is meant for the user."""


class AlreadySent(SendRefused):
    pass


class InvalidUnsubscribeToken(Exception):
    pass


@dataclass
class DeliveryResult:
    """What one `marketing_email_deliver` run did (its own claims only)."""

    sent: int = 0
    failed: int = 0
    chunks: int = 0
    done: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SendOutcome:
    email_id: int
    status: str
    breakdown: object  # contacts.selectors.SendBreakdown, at the moment of the call
    delivery: DeliveryResult | None = None  # when sent in this process (explicit contacts)


def unsubscribe_token(*, contact_id: int, email_id: int | None) -> str:
    """A signed token naming the contact and the email: cannot be forged or re-aimed."""
    from django.core import signing

    # No timestamp: one stable link per (contact, email), valid as long as the email exists.
    return signing.Signer(salt=UNSUBSCRIBE_SALT).sign_object({"c": int(contact_id), "e": email_id})


def unsubscribe_token_read(token: str) -> tuple[int, int | None]:
    from django.core import signing

    try:
        data = signing.Signer(salt=UNSUBSCRIBE_SALT).unsign_object(token)
    except (signing.BadSignature, ValueError) as error:
        raise InvalidUnsubscribeToken("This unsubscribe link is not valid.") from error
    contact_id, email_id = (data.get("c"), data.get("e")) if isinstance(data, dict) else (0, 0)
    if not isinstance(contact_id, int) or not (email_id is None or isinstance(email_id, int)):
        raise InvalidUnsubscribeToken("This unsubscribe link is not valid.")
    return contact_id, email_id


def unsubscribe_url(*, contact_id: int, email_id: int | None) -> str:
    from django.conf import settings
    from django.urls import reverse

    token = unsubscribe_token(contact_id=contact_id, email_id=email_id)
    return settings.PUBLIC_BASE_URL.rstrip("/") + reverse("unsubscribe", args=[token])


@dataclass
class UnsubscribeResult:
    contact: Contact
    already: bool


def contact_unsubscribe(*, token: str, at: dt.datetime | None = None) -> UnsubscribeResult:
    """Unsubscribe the token's contact from marketing email (idempotent) and log it.

    The status is untouched: suppression and marketing status are separate facts.
    """
    from contacts.outreach.models import (
        MarketingEmail,
        Unsubscription,
    )

    contact_id, email_id = unsubscribe_token_read(token)
    with transaction.atomic():
        contact = lock_contact(contact_id)
        if contact is None:
            raise InvalidUnsubscribeToken("This unsubscribe link is no longer valid.")
        if contact.unsubscribed:
            return UnsubscribeResult(contact=contact, already=True)
        contact_update(contact=contact, unsubscribed=True)
        known_email = email_id is not None and MarketingEmail.objects.filter(pk=email_id).exists()
        Unsubscription.objects.create(
            contact_id=contact.pk,
            email_id=email_id if known_email else None,
            at=at or timezone.now(),
        )
    return UnsubscribeResult(contact=contact, already=False)


def marketing_email_validate(*, email) -> None:
    """The email can be sent: body with its unsubscribe placeholder, one valid audience."""
    from contacts.outreach.selectors import marketing_email_audience

    email.full_clean()
    marketing_email_audience(email=email)  # a stored filter that no longer validates


def _marketing_message(email, *, contact_id: int, to: str, first_name: str, connection):
    from django.core.mail import EmailMessage

    from contacts.outreach.models import (
        FIRST_NAME_PLACEHOLDER,
        UNSUBSCRIBE_PLACEHOLDER,
    )

    url = unsubscribe_url(contact_id=contact_id, email_id=email.pk)
    body = email.body.replace(UNSUBSCRIBE_PLACEHOLDER, url).replace(
        FIRST_NAME_PLACEHOLDER, first_name or ""
    )
    return EmailMessage(
        subject=email.subject,
        body=body,
        from_email=email.from_email or None,
        to=[to],
        connection=connection,
        # RFC 8058 one-click unsubscribe: the mailbox provider POSTs to the same page.
        headers={
            "List-Unsubscribe": f"<{url}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )


def marketing_email_deliver(
    *,
    email,
    contacts: QuerySet,
    max_chunks: int | None = None,
    progress: Progress | None = None,
) -> DeliveryResult:
    """Send `email` to the contacts the guard lets through, chunk by chunk. Resumable.

    Each chunk: the next `SEND_CHUNK_SIZE` recipients by id that the guard accepts NOW and
    that have no EmailSend row for this email; claim them (one INSERT, ON CONFLICT DO
    NOTHING, tagged with this run's token); send exactly the rows this run inserted, one
    EmailMessage each over one connection; confirm them (one UPDATE for the sent, one per
    distinct failure). A rerun after a crash finds the claimed rows and skips them: at
    most once per (email, contact). `max_chunks` lets a task stop and re-enqueue itself.
    """
    from django.core.mail import get_connection
    from django.db.models import Exists, OuterRef

    from contacts.outreach.models import (
        EmailSend,
        EmailSendStatus,
        MarketingEmail,
    )
    from contacts.outreach.selectors import marketing_recipients

    claim = str(uuid.uuid4())
    result = DeliveryResult()
    already = EmailSend.objects.filter(email_id=email.pk, contact_id=OuterRef("pk"))
    last = 0
    mail = get_connection()
    while max_chunks is None or result.chunks < max_chunks:
        now = timezone.now()
        batch = list(
            marketing_recipients(contacts=contacts, at=now)
            .filter(~Exists(already), pk__gt=last)  # emailsend_once answers the probe
            .order_by("pk")
            .values_list("pk", "email", "first_name")[:SEND_CHUNK_SIZE]
        )
        if not batch:
            result.done = True
            break
        last = batch[-1][0]
        result.chunks += 1
        EmailSend.objects.bulk_create(
            [
                EmailSend(
                    email_id=email.pk,
                    contact_id=pk,
                    to_address=address,
                    status=EmailSendStatus.CLAIMED,
                    claim=claim,
                    at=now,
                )
                for pk, address, _ in batch
            ],
            ignore_conflicts=True,
        )
        mine = set(
            EmailSend.objects.filter(
                claim=claim, contact_id__in=[row[0] for row in batch]
            ).values_list("contact_id", flat=True)  # emailsend_claim_idx
        )
        sent: list[int] = []
        failed: dict[str, list[int]] = {}
        mail.open()
        try:
            for pk, address, first_name in batch:
                if pk not in mine:
                    continue  # another run claimed it first
                message = _marketing_message(
                    email, contact_id=pk, to=address, first_name=first_name, connection=mail
                )
                try:
                    message.send()
                except Exception as error:  # one bad address must not stop the others
                    failed.setdefault(f"{error.__class__.__name__}: {error}"[:1000], []).append(pk)
                else:
                    sent.append(pk)
        finally:
            mail.close()
        done_at = timezone.now()
        mine_rows = EmailSend.objects.filter(claim=claim)
        if sent:
            mine_rows.filter(contact_id__in=sent).update(status=EmailSendStatus.SENT, at=done_at)
        for error, ids in failed.items():
            mine_rows.filter(contact_id__in=ids).update(
                status=EmailSendStatus.FAILED, at=done_at, error=error
            )
        failures = sum(len(ids) for ids in failed.values())
        MarketingEmail.objects.filter(pk=email.pk).update(
            sent_count=F("sent_count") + len(sent), failed_count=F("failed_count") + failures
        )
        result.sent += len(sent)
        result.failed += failures
        if progress:
            progress(result.sent + result.failed, 0)
    return result


def marketing_email_finish(*, email) -> bool:
    """Mark a send whose audience is exhausted as sent (once); True if this call did."""
    from contacts.outreach.models import (
        MarketingEmail,
        MarketingEmailStatus,
    )

    return bool(
        MarketingEmail.objects.filter(pk=email.pk, status=MarketingEmailStatus.SENDING).update(
            status=MarketingEmailStatus.SENT, sent_at=timezone.now()
        )
    )


def marketing_email_send(*, email, contacts: QuerySet | None = None, actor=None) -> SendOutcome:
    """Send a marketing email, only ever to marketing, subscribed, unbounced contacts.

    Without `contacts` (the admin and the API): the email's audience. A draft becomes
    "sending" with the breakdown stored, and the background task is enqueued after
    commit; a "sending" email is re-enqueued (a resume: only the rest is sent); a sent
    email raises `AlreadySent` and nothing is sent.

    With `contacts` (workflows, a QuerySet[Contact]): sends to those the guard accepts,
    now, in this process — the caller is already a background job — whatever the
    email's status, still at most once per contact.
    """
    from contacts.outreach.models import (
        MarketingEmailStatus,
    )
    from contacts.outreach.selectors import (
        marketing_email_audience,
        marketing_send_breakdown,
    )
    from contacts.tasks import send_marketing_email

    if contacts is not None:
        if not isinstance(contacts, QuerySet) or contacts.model is not Contact:
            raise TypeError("contacts must be a QuerySet[Contact]")
        marketing_email_validate(email=email)
        breakdown = marketing_send_breakdown(contacts=contacts, email=email)
        delivery = marketing_email_deliver(email=email, contacts=contacts)
        email.refresh_from_db()
        return SendOutcome(
            email_id=email.pk, status=email.status, breakdown=breakdown, delivery=delivery
        )
    with transaction.atomic():
        locked = lock_marketing_email(email.pk)
        if locked.status == MarketingEmailStatus.SENT:
            raise AlreadySent(
                f"“{locked}” was already sent on {locked.sent_at:%Y-%m-%d %H:%M} UTC; "
                "nothing more was sent."
            )
        marketing_email_validate(email=locked)
        breakdown = marketing_send_breakdown(
            contacts=marketing_email_audience(email=locked), email=locked
        )
        if locked.status == MarketingEmailStatus.DRAFT:
            locked.status = MarketingEmailStatus.SENDING
            locked.send_started_at = timezone.now()
            locked.sent_by = actor if getattr(actor, "pk", None) else None
            locked.audience_count = breakdown.audience
            locked.recipient_count = breakdown.will_receive
            locked.excluded_non_marketing = breakdown.excluded_non_marketing
            locked.excluded_unsubscribed = breakdown.excluded_unsubscribed
            locked.excluded_bounced = breakdown.excluded_bounced
            locked.save()
        email_id = locked.pk
        jobs.enqueue(
            send_marketing_email,
            email_id,
            what=f"The send of “{locked}”",
            remedy="Nothing more was sent: send it again once the queue is back (it resumes).",
        )
    email.refresh_from_db()
    return SendOutcome(email_id=email.pk, status=email.status, breakdown=breakdown)


# A claimed row older than this is taken for a send that died between its claim and its
# confirmation (a worker killed mid-chunk): well beyond a chunk's few seconds of SMTP.
STALE_CLAIM_AGE = dt.timedelta(hours=1)


def marketing_email_release_stale_claims(
    *, email, older_than: dt.timedelta = STALE_CLAIM_AGE, actor=None
) -> int:
    """Let recipients whose send died mid-chunk be sent again; return how many.

    Sending is at most once: a row claimed but never confirmed (the worker died between
    the claim and the SMTP answer) blocks its contact for good. An operator who has
    checked that those messages did not go out releases them here: the stale claimed
    rows are deleted and the send resumes (a sent email goes back to "sending"), so the
    guard decides afresh who receives it. Sent and failed rows are never touched.
    """
    from contacts.outreach.models import (
        EmailSend,
        EmailSendStatus,
        MarketingEmailStatus,
    )
    from contacts.tasks import send_marketing_email

    cutoff = timezone.now() - older_than
    with transaction.atomic():
        locked = lock_marketing_email(email.pk)
        if locked.status == MarketingEmailStatus.DRAFT:
            return 0
        released, _ = EmailSend.objects.filter(
            email_id=locked.pk, status=EmailSendStatus.CLAIMED, at__lt=cutoff
        ).delete()
        if released:
            if locked.status == MarketingEmailStatus.SENT:
                locked.status = MarketingEmailStatus.SENDING
                locked.sent_at = None
                locked.save(update_fields=["status", "sent_at", "updated_at"])
            logger.info(
                "released %s stale claims of marketing email %s (by %s)", released, locked.pk, actor
            )
            jobs.enqueue(
                send_marketing_email,
                locked.pk,
                what=f"The send of “{locked}”",
                remedy="The claims are released: send it again once the queue is back.",
            )
    email.refresh_from_db()
    return released


def marketing_email_create(**fields):
    from contacts.outreach.models import MarketingEmail

    email = MarketingEmail(**fields)
    email.full_clean()
    email.save()
    return email


def marketing_email_update(*, email, **fields):
    """Change a draft; an email that started sending is history and refuses."""
    from contacts.outreach.models import MarketingEmailStatus

    if email.status != MarketingEmailStatus.DRAFT:
        raise SendRefused(f"“{email}” is {email.get_status_display().lower()}: it cannot change.")
    for name, value in fields.items():
        setattr(email, name, value)
    email.full_clean()
    email.save()
    return email


def marketing_email_delete(*, email) -> None:
    from contacts.outreach.models import MarketingEmailStatus

    if email.status != MarketingEmailStatus.DRAFT or email.sends.exists():
        raise SendRefused(f"“{email}” has been sent to contacts: its send log is kept.")
    email.delete()


@dataclass
class MembershipChange:
    """What adding to / removing from an audience or a list did (or would do)."""

    operation: str  # "add" or "remove"
    matched: int = 0
    added: int = 0
    already_member: int = 0
    refused_non_marketing: int = 0
    removed: int = 0
    not_member: int = 0
    preview: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def _membership_change(
    *,
    model,
    owner_field: str,
    owner_id: int,
    contacts: Target,
    operation: str,
    marketing_only: bool,
    preview: bool,
    at: dt.datetime | None = None,
) -> MembershipChange:
    """Set-based add/remove: per chunk one aggregate, then one INSERT … SELECT … ON CONFLICT
    DO NOTHING (PostgreSQL and SQLite alike) or one DELETE. No contact enters Python."""
    from django.db.models import Exists, OuterRef

    now = at or timezone.now()
    change = MembershipChange(operation=operation, preview=preview)
    member = Exists(model.objects.filter(**{owner_field: owner_id}, contact_id=OuterRef("pk")))
    allowed = marketing_q(now) if marketing_only else Q(pk__isnull=False)
    table = model._meta.db_table
    owner_column = model._meta.get_field(owner_field).column
    with transaction.atomic():
        for chunk in target_chunks(as_target(contacts)):
            counts = chunk.queryset.order_by().aggregate(
                matched=Count("pk"),
                allowed=Count("pk", filter=allowed),
                member=Count("pk", filter=Q(member)),
                allowed_member=Count("pk", filter=allowed & Q(member)),
            )  # (none of these keys is a Contact field: an aggregate would shadow it)
            change.matched += counts["matched"]
            if operation == "add":
                change.refused_non_marketing += counts["matched"] - counts["allowed"]
                if preview:
                    change.already_member += counts["allowed_member"]
                    change.added += counts["allowed"] - counts["allowed_member"]
                    continue
                eligible_sql, eligible_params = (
                    chunk.queryset.filter(allowed).order_by().values("pk").query.sql_with_params()
                )
                sql, params = sql_fill(
                    f"INSERT INTO {table} ({owner_column}, contact_id, added_at) "
                    f"SELECT {{owner}}, id, {{now}} FROM {CONTACT_TABLE} WHERE id IN ({{eligible}}) "
                    f"ON CONFLICT ({owner_column}, contact_id) DO NOTHING",
                    owner=sql_param(owner_id),
                    now=sql_param(now),
                    eligible=(eligible_sql, list(eligible_params)),
                )
                with connection.cursor() as cursor:
                    cursor.execute(sql, params)
                    added = cursor.rowcount
                change.added += added
                change.already_member += counts["allowed"] - added
            else:
                if preview:
                    change.removed += counts["member"]
                    change.not_member += counts["matched"] - counts["member"]
                    continue
                removed, _ = model.objects.filter(
                    **{owner_field: owner_id}, contact_id__in=chunk.queryset.order_by().values("pk")
                ).delete()
                change.removed += removed
                change.not_member += counts["matched"] - removed
    return change


def ad_audience_add(
    *, audience, contacts: Target, actor=None, preview: bool = False, at=None
) -> MembershipChange:
    """Add contacts to an ad audience: marketing contacts only (DESIGN §1.1).

    Non-marketing contacts are refused and counted; unsubscribed or bounced marketing
    contacts are accepted (consent is about email, not ads). Idempotent.
    """
    from contacts.outreach.models import AdAudienceMembership

    return _membership_change(
        model=AdAudienceMembership,
        owner_field="audience",
        owner_id=audience.pk,
        contacts=contacts,
        operation="add",
        marketing_only=True,
        preview=preview,
        at=at,
    )


def ad_audience_remove(
    *, audience, contacts: Target, actor=None, preview: bool = False
) -> MembershipChange:
    """Remove contacts from an ad audience. Any contact may be removed: taking a
    non-marketing contact out of an audience is what the rule wants."""
    from contacts.outreach.models import AdAudienceMembership

    return _membership_change(
        model=AdAudienceMembership,
        owner_field="audience",
        owner_id=audience.pk,
        contacts=contacts,
        operation="remove",
        marketing_only=False,
        preview=preview,
    )


def contact_list_add(*, contact_list, contacts: Target, preview: bool = False) -> MembershipChange:
    """Add contacts to a static list (any contact: the send guard applies when mailing)."""
    from contacts.outreach.models import ContactListMembership

    return _membership_change(
        model=ContactListMembership,
        owner_field="contact_list",
        owner_id=contact_list.pk,
        contacts=contacts,
        operation="add",
        marketing_only=False,
        preview=preview,
    )


def contact_list_remove(
    *, contact_list, contacts: Target, preview: bool = False
) -> MembershipChange:
    from contacts.outreach.models import ContactListMembership

    return _membership_change(
        model=ContactListMembership,
        owner_field="contact_list",
        owner_id=contact_list.pk,
        contacts=contacts,
        operation="remove",
        marketing_only=False,
        preview=preview,
    )


MARKETING_TYPE = "marketing"


def communication_send(
    *,
    contact: Contact,
    type: str,
    subject: str,
    body: str,
    actor=None,
    from_email: str | None = None,
    idempotency_key: str | None = None,
):
    """Send a non-marketing email (sales, transactional, registration, chat transcript,
    ticket reply, feedback survey) to any contact — marketing or not, unsubscribed or
    not — through the mail backend, and log it with its type.

    Refuses "marketing": marketing email goes through `marketing_email_send` and its
    guard. The log row is claimed before the send: a retry with the same
    `idempotency_key` returns the first row and sends nothing.
    """
    from django.core.mail import EmailMessage

    from contacts.outreach.models import (
        Communication,
        CommunicationType,
        EmailSendStatus,
    )

    if type == MARKETING_TYPE:
        raise SendRefused(
            "Marketing email cannot be sent as a communication: create a marketing email, "
            "whose send reaches only marketing, subscribed, unbounced contacts."
        )
    if type not in CommunicationType.values:
        raise SendRefused(
            f"Unknown communication type {type!r}; use one of {', '.join(CommunicationType.values)}."
        )
    fields = {
        "contact_id": contact.pk,
        "type": type,
        "subject": subject[:200],
        "to_address": contact.email,
        "status": EmailSendStatus.CLAIMED,
        "at": timezone.now(),
        "actor": actor if getattr(actor, "pk", None) else None,
    }
    if idempotency_key is None:
        log = Communication.objects.create(**fields)
    else:
        log, created = row_get_or_create(
            Communication, lookup={"idempotency_key": idempotency_key}, defaults=fields
        )
        if not created:
            log.replayed = True
            return log
    try:
        EmailMessage(
            subject=subject, body=body, from_email=from_email or None, to=[contact.email]
        ).send()
    except Exception as error:
        log.status, log.error = (
            EmailSendStatus.FAILED,
            f"{error.__class__.__name__}: {error}"[:1000],
        )
    else:
        log.status = EmailSendStatus.SENT
    log.at = timezone.now()
    log.save(update_fields=["status", "error", "at"])
    log.replayed = False
    return log
