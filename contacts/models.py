"""Contacts and sources: the core records every concern of contacts builds on."""

from __future__ import annotations

from django.db import models
from django.db.models.functions import Lower

from contacts.status.rules import (
    MARKETING,
    NON_MARKETING,
    is_marketing,
    marketing_q,
    not_marketing_q,
    pending_q,
)
from crm.models import BaseModel


class MarketingStatus(models.TextChoices):
    MARKETING = MARKETING, "Marketing"
    NON_MARKETING = NON_MARKETING, "Non-marketing"


class SourceKind(models.TextChoices):
    FORM = "form", "Form"
    EXTERNAL_FORM = "external_form", "External (non-native) form"
    IMPORT = "import", "Import"
    CHATFLOW = "chatflow", "Chatflow / conversation"
    INTEGRATION = "integration", "Connected app / integration"
    ADS = "ads", "Ads lead"
    MANUAL = "manual", "Created by hand (admin or API)"
    MOBILE_APP = "mobile_app", "Mobile app"
    EMAIL_LOGGING = "email_logging", "One-to-one email logging"
    TEAM_INBOX = "team_inbox", "Team inbox email"
    DOCUMENT = "document", "Document opens"
    MEETINGS = "meetings", "Meetings link"
    EMAIL_EXTENSION = "email_extension", "Email extension"


# DESIGN §1.3: the default status of a new contact, by the kind of its source.
KIND_DEFAULT_MARKETING: dict[str, bool] = {
    SourceKind.FORM: True,
    SourceKind.EXTERNAL_FORM: True,
    SourceKind.ADS: True,
}
# Contacts from these sources are always created non-marketing.
LOCKED_KINDS: frozenset[str] = frozenset(
    {
        SourceKind.MOBILE_APP,
        SourceKind.EMAIL_LOGGING,
        SourceKind.TEAM_INBOX,
        SourceKind.DOCUMENT,
        SourceKind.MEETINGS,
        SourceKind.EMAIL_EXTENSION,
    }
)


class Source(BaseModel):
    """Where contacts come from; its default decides the status of the contacts it creates."""

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=32, choices=SourceKind.choices, db_index=True)
    default_marketing = models.BooleanField(
        default=False, help_text="New contacts from this source are created as marketing contacts."
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(kind__in=sorted(LOCKED_KINDS), default_marketing=True),
                name="source_locked_kinds_never_marketing",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def locked(self) -> bool:
        return self.kind in LOCKED_KINDS

    @staticmethod
    def kind_default(kind: str) -> bool:
        return KIND_DEFAULT_MARKETING.get(kind, False)


class LifecycleStage(models.TextChoices):
    SUBSCRIBER = "subscriber", "Subscriber"
    LEAD = "lead", "Lead"
    MQL = "mql", "Marketing qualified lead"
    SQL = "sql", "Sales qualified lead"
    OPPORTUNITY = "opportunity", "Opportunity"
    CUSTOMER = "customer", "Customer"
    EVANGELIST = "evangelist", "Evangelist"
    OTHER = "other", "Other"


class LeadStatus(models.TextChoices):
    NEW = "new", "New"
    OPEN = "open", "Open"
    IN_PROGRESS = "in_progress", "In progress"
    OPEN_DEAL = "open_deal", "Open deal"
    UNQUALIFIED = "unqualified", "Unqualified"
    ATTEMPTED_TO_CONTACT = "attempted_to_contact", "Attempted to contact"
    CONNECTED = "connected", "Connected"
    BAD_TIMING = "bad_timing", "Bad timing"


class ContactType(models.TextChoices):
    PROSPECT = "prospect", "Prospect"
    CUSTOMER = "customer", "Customer"
    PARTNER = "partner", "Partner"
    EMPLOYEE = "employee", "Employee"
    EVANGELIST = "evangelist", "Evangelist"
    OTHER = "other", "Other"


class StatusSourceType(models.TextChoices):
    """Who or what asked for a status change (the ledger's "source type")."""

    MANUAL = "manual", "Person (contact page)"
    BULK_ACTION = "bulk_action", "Bulk action"
    API = "api", "API"
    CREATION = "creation", "Contact creation"
    WORKFLOW = "workflow", "Workflow"
    IMPORT = "import", "Import"
    FORM = "form", "Form"
    INTEGRATION = "integration", "Integration"
    CHATFLOW = "chatflow", "Chatflow"
    ADS = "ads", "Ads"
    ROTATION = "rotation", "Rotation"
    HYGIENE = "hygiene", "Hygiene policy"
    ROLLOVER = "rollover", "Period rollover"
    DELETION = "deletion", "Deletion"
    MERGE = "merge", "Merge"
    SEED = "seed", "Demo data"


class ContactQuerySet(models.QuerySet):
    def billable(self, at):
        """Contacts whose effective status at `at` is marketing (a pending downgrade still counts)."""
        return self.filter(marketing_q(at))

    def not_billable(self, at):
        """Contacts whose effective status at `at` is non-marketing (the complement)."""
        return self.filter(not_marketing_q(at))

    def pending_downgrade(self, at):
        return self.filter(pending_q(at))

    def not_pending(self, at):
        """Contacts with no downgrade scheduled after `at`. A row filter: most contacts are
        not pending, so a newest-first scan of the primary key finds a page at once (an
        anti-join with the pending ids would hash all of them first)."""
        return self.exclude(pending_q(at))


class Contact(BaseModel):
    email = models.EmailField(
        max_length=254, unique=True, help_text="Stored lower-cased and trimmed."
    )
    first_name = models.CharField(max_length=100, blank=True)
    last_name = models.CharField(max_length=100, blank=True)
    company = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=40, blank=True)
    lifecycle_stage = models.CharField(
        max_length=20, choices=LifecycleStage.choices, default=LifecycleStage.LEAD
    )
    lead_status = models.CharField(max_length=30, choices=LeadStatus.choices, blank=True)
    contact_type = models.CharField(
        max_length=20, choices=ContactType.choices, default=ContactType.PROSPECT
    )
    unsubscribed = models.BooleanField(
        default=False, help_text="Unsubscribed from marketing email."
    )
    hard_bounced = models.BooleanField(default=False)
    # Not indexed, on purpose: engagement ingestion and scoring rewrite these two columns
    # for every contact that engages, and an update that changes no indexed column stays
    # in place (HOT) instead of writing all the table's indexes. Their readers — criteria,
    # hygiene, rotation's ranking, the savings report — select broad sets anyway.
    lead_score = models.IntegerField(default=0)
    last_engaged_at = models.DateTimeField(null=True, blank=True)
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="contacts")

    # The marketing status is written only by contacts.services (editable=False keeps
    # every ModelForm and serializer away from it).
    marketing_status = models.CharField(
        max_length=16,
        choices=MarketingStatus.choices,
        default=MarketingStatus.NON_MARKETING,
        editable=False,
    )
    marketing_until = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text=(
            "Marketing contact: non-marketing from this instant (a pending downgrade). "
            "Non-marketing contact: non-marketing since this instant (the applied downgrade)."
        ),
    )
    # Null until the status has a reason (the ledger's source type of its last change): ""
    # is not one of the choices.
    marketing_reason_type = models.CharField(  # noqa: DJ001
        max_length=20, choices=StatusSourceType.choices, null=True, blank=True, editable=False
    )
    marketing_reason_id = models.CharField(max_length=64, blank=True, editable=False)
    marketing_reason_name = models.CharField(max_length=200, blank=True, editable=False)
    marketing_changed_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ContactQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        permissions = [("change_marketing_status", "Can change the marketing status of contacts")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(email=Lower("email")), name="contact_email_normalised"
            ),
            models.CheckConstraint(
                condition=models.Q(marketing_status__in=MarketingStatus.values),
                name="contact_marketing_status_valid",
            ),
        ]
        indexes = [
            # Declared here rather than with db_index=True, which on PostgreSQL adds a second,
            # LIKE-pattern index per column: nothing runs LIKE on these, and every index is
            # one more write for each imported or created contact.
            models.Index(fields=["lifecycle_stage"], name="contact_lifecycle_idx"),
            models.Index(fields=["lead_status"], name="contact_lead_status_idx"),
            # Pending downgrades: the rollover and the "pending" filter read only these rows.
            # With the id in the key, a rollover chunk (an id range) skips the other chunks'
            # rows inside the index instead of fetching each from the table.
            models.Index(
                fields=["marketing_until", "id"],
                name="contact_pending_idx",
                condition=models.Q(marketing_until__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return self.email

    def save(self, *args, **kwargs):
        self.email = normalise_email(self.email)
        super().save(*args, **kwargs)

    @property
    def full_name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    def is_billable(self, at) -> bool:
        return is_marketing(self.marketing_status, self.marketing_until, at)

    def effective_status(self, at) -> str:
        return MarketingStatus.MARKETING if self.is_billable(at) else MarketingStatus.NON_MARKETING

    def pending_from(self, at):
        """The instant a pending downgrade takes effect, or None."""
        if self.is_billable(at) and self.marketing_until is not None:
            return self.marketing_until
        return None


def normalise_email(value: str) -> str:
    return (value or "").strip().lower()


# Each concern keeps its models in its own package; importing them here registers them
# with the contacts app (the tables and migrations are the app's).
from contacts.status import models as status_models  # noqa: E402, F401, I001
from contacts.engagement import models as engagement_models  # noqa: E402, F401
from contacts.intake import models as intake_models  # noqa: E402, F401
from contacts.imports import models as imports_models  # noqa: E402, F401
from contacts.outreach import models as outreach_models  # noqa: E402, F401
from contacts.merge import models as merge_models  # noqa: E402, F401
