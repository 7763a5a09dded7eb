"""Outreach: lists, marketing email and its send log, unsubscriptions, ad audiences, communications."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from contacts.intake.models import AdPlatform
from contacts.models import Contact
from crm.models import BaseModel

#
# DESIGN §1.1: suppression (unsubscribed, hard bounced) and the marketing status are
# separate facts. Marketing email reaches only contacts that are marketing AND neither
# unsubscribed nor bounced (contacts.services.marketing_recipients, the one guard);
# ad audiences accept marketing contacts (suppressed ones included); non-marketing
# communications reach anyone and are logged by type.


class ContactList(BaseModel):
    """A static list of contacts: an audience picked by hand (or by an import)."""

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    members = models.ManyToManyField(
        Contact, through="ContactListMembership", related_name="contact_lists", blank=True
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ContactListMembership(models.Model):
    contact_list = models.ForeignKey(
        ContactList,
        on_delete=models.CASCADE,
        db_index=False,  # covered by contactlist_member_once
        related_name="memberships",
    )
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="list_memberships")
    added_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["contact_list", "contact"], name="contactlist_member_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.contact_list_id}: {self.contact_id}"


class MarketingEmailStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"


UNSUBSCRIBE_PLACEHOLDER = "{unsubscribe_url}"
FIRST_NAME_PLACEHOLDER = "{first_name}"


class MarketingEmail(BaseModel):
    """A marketing email to an audience: a contact filter or a static list.

    The counts are written by the send: the breakdown when sending started, then what
    was sent. Sending goes through contacts.services.marketing_email_send only.
    """

    name = models.CharField(max_length=200)
    subject = models.CharField(max_length=200)
    body = models.TextField(
        help_text=(
            f"Plain text. Must contain {UNSUBSCRIBE_PLACEHOLDER} (each recipient's own "
            f"unsubscribe link); {FIRST_NAME_PLACEHOLDER} is replaced by the first name."
        )
    )
    from_email = models.EmailField(
        blank=True, help_text="Sender address; empty for the site's DEFAULT_FROM_EMAIL."
    )
    audience_filter = models.JSONField(
        default=dict,
        blank=True,
        help_text='Contact filters, as the contacts API takes them, e.g. {"lifecycle_stage": "lead"}.',
    )
    audience_list = models.ForeignKey(
        ContactList,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="marketing_emails",
        help_text="A static list (instead of a filter).",
    )
    status = models.CharField(
        max_length=16,
        choices=MarketingEmailStatus.choices,
        default=MarketingEmailStatus.DRAFT,
        editable=False,
    )
    send_started_at = models.DateTimeField(null=True, blank=True, editable=False)
    sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        editable=False,
        related_name="+",
    )
    # The breakdown when the send started (contacts.services.SendBreakdown).
    audience_count = models.PositiveIntegerField(default=0, editable=False)
    recipient_count = models.PositiveIntegerField(default=0, editable=False)
    excluded_non_marketing = models.PositiveIntegerField(default=0, editable=False)
    excluded_unsubscribed = models.PositiveIntegerField(default=0, editable=False)
    excluded_bounced = models.PositiveIntegerField(default=0, editable=False)
    # What the send did (kept up to date from EmailSend as the chunks go).
    sent_count = models.PositiveIntegerField(default=0, editable=False)
    failed_count = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-id"]
        permissions = [("send_marketingemail", "Can send marketing email")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=MarketingEmailStatus.values),
                name="marketingemail_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        from django.core.exceptions import ValidationError

        errors = {}
        if UNSUBSCRIBE_PLACEHOLDER not in (self.body or ""):
            errors["body"] = (
                f"Put {UNSUBSCRIBE_PLACEHOLDER} in the body: every marketing email carries its "
                "recipient's unsubscribe link."
            )
        if self.audience_list_id and self.audience_filter:
            errors["audience_list"] = "Choose a contact filter or a list, not both."
        elif not self.audience_list_id and not self.audience_filter:
            errors["audience_filter"] = "Choose the audience: a contact filter or a list."
        if errors:
            raise ValidationError(errors)


class EmailSendStatus(models.TextChoices):
    CLAIMED = "claimed", "Claimed (being sent)"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"


class EmailSend(models.Model):
    """One marketing email to one contact: claimed before the send, confirmed after.

    The unique (email, contact) pair makes a send at most once: a retried, resumed or
    duplicated task inserts with ON CONFLICT DO NOTHING and sends only the rows its own
    `claim` token inserted. A row left "claimed" by a worker that died mid-chunk is
    never sent again (it may or may not have left the building). Rows outlive their
    contact, like the ledger.
    """

    email = models.ForeignKey(
        MarketingEmail,
        on_delete=models.PROTECT,
        db_index=False,  # covered by emailsend_once
        related_name="sends",
    )
    contact = models.ForeignKey(
        Contact, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    to_address = models.EmailField(max_length=254)
    status = models.CharField(max_length=16, choices=EmailSendStatus.choices)
    claim = models.CharField(max_length=36, help_text="The run that inserted this row.")
    at = models.DateTimeField()
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "marketing email send"
        constraints = [
            models.UniqueConstraint(fields=["email", "contact"], name="emailsend_once"),
        ]
        indexes = [models.Index(fields=["claim"], name="emailsend_claim_idx")]

    def __str__(self) -> str:
        return f"{self.email_id} → {self.to_address} ({self.status})"


class Unsubscription(models.Model):
    """A contact unsubscribed through the link of a marketing email (append-only)."""

    contact = models.ForeignKey(
        Contact, on_delete=models.DO_NOTHING, db_constraint=False, related_name="+"
    )
    email = models.ForeignKey(
        MarketingEmail,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="unsubscriptions",
    )
    at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.contact_id} at {self.at:%Y-%m-%d %H:%M}"


class AdAudience(BaseModel):
    """An ad platform audience. Only marketing contacts may be members (DESIGN §1.1)."""

    name = models.CharField(max_length=200, unique=True)
    platform = models.CharField(max_length=16, choices=AdPlatform.choices)
    members = models.ManyToManyField(
        Contact, through="AdAudienceMembership", related_name="ad_audiences", blank=True
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AdAudienceMembership(models.Model):
    audience = models.ForeignKey(
        AdAudience,
        on_delete=models.CASCADE,
        db_index=False,  # covered by adaudience_member_once
        related_name="memberships",
    )
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    added_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["audience", "contact"], name="adaudience_member_once"),
        ]

    def __str__(self) -> str:
        return f"{self.audience_id}: {self.contact_id}"


class CommunicationType(models.TextChoices):
    """Non-marketing communication (DESIGN §1.1): reaches any contact, marketing or not."""

    SALES_EMAIL = "sales_email", "One-to-one sales email"
    TRANSACTIONAL = "transactional", "Transactional email"
    REGISTRATION = "registration", "Registration / confirmation email"
    CHAT_TRANSCRIPT = "chat_transcript", "Chat transcript"
    TICKET_REPLY = "ticket_reply", "Ticket reply"
    FEEDBACK_SURVEY = "feedback_survey", "Feedback survey"


class Communication(models.Model):
    """The log of non-marketing communication sent to contacts (append-only)."""

    contact = models.ForeignKey(
        Contact,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # covered by communication_contact_idx
        related_name="+",
    )
    type = models.CharField(max_length=24, choices=CommunicationType.choices)
    subject = models.CharField(max_length=200)
    to_address = models.EmailField(max_length=254)
    status = models.CharField(max_length=16, choices=EmailSendStatus.choices)
    error = models.TextField(blank=True)
    at = models.DateTimeField()
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        db_index=False,
        related_name="+",
    )
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(type__in=CommunicationType.values),
                name="communication_type_not_marketing",
            ),
        ]
        indexes = [
            # A contact's communications, newest first.
            models.Index(fields=["contact", "-id"], name="communication_contact_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.get_type_display()} to {self.to_address}"
