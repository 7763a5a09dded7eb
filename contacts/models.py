from django.conf import settings
from django.db import models
from django.db.models.functions import Lower

from crm.models import BaseModel


class MarketingStatus(models.TextChoices):
    MARKETING = "marketing", "Marketing"
    NON_MARKETING = "non_marketing", "Non-marketing"


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
    SEED = "seed", "Demo data"


class ContactQuerySet(models.QuerySet):
    def billable(self, at):
        """Contacts whose effective status at `at` is marketing (a pending downgrade still counts)."""
        return self.filter(
            models.Q(marketing_status=MarketingStatus.MARKETING)
            & (models.Q(marketing_until__isnull=True) | models.Q(marketing_until__gt=at))
        )

    def not_billable(self, at):
        return self.exclude(pk__in=self.billable(at).values("pk"))

    def pending_downgrade(self, at):
        return self.filter(marketing_status=MarketingStatus.MARKETING, marketing_until__gt=at)


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
    marketing_reason_type = models.CharField(
        max_length=20, choices=StatusSourceType.choices, blank=True, editable=False
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
        return self.marketing_status == MarketingStatus.MARKETING and (
            self.marketing_until is None or self.marketing_until > at
        )

    def effective_status(self, at) -> str:
        return MarketingStatus.MARKETING if self.is_billable(at) else MarketingStatus.NON_MARKETING

    def pending_from(self, at):
        """The instant a pending downgrade takes effect, or None."""
        if self.marketing_status == MarketingStatus.MARKETING and (
            self.marketing_until is not None and self.marketing_until > at
        ):
            return self.marketing_until
        return None


def normalise_email(value: str) -> str:
    return (value or "").strip().lower()


class LedgerStatus(models.TextChoices):
    MARKETING = "marketing", "Marketing"
    NON_MARKETING = "non_marketing", "Non-marketing"
    NONE = "none", "(deleted)"


class LedgerAction(models.TextChoices):
    UPGRADE = "upgrade", "Set marketing (immediate)"
    DOWNGRADE_SCHEDULED = "downgrade_scheduled", "Set non-marketing (from the next update date)"
    DOWNGRADE_CANCELLED = "downgrade_cancelled", "Pending non-marketing cancelled"
    ROLLOVER = "rollover", "Pending non-marketing applied at the update date"
    DELETED = "deleted", "Marketing contact deleted"


class StatusChangeRequest(models.Model):
    """One call of the status service; its idempotency key makes a retry change nothing."""

    idempotency_key = models.CharField(max_length=200, unique=True)
    operation = models.CharField(max_length=32)
    fingerprint = models.CharField(
        max_length=64, help_text="Hash of what was asked, to refuse a reused key."
    )
    source_type = models.CharField(max_length=20, choices=StatusSourceType.choices)
    source_id = models.CharField(max_length=64, blank=True)
    source_name = models.CharField(max_length=200, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField()
    result = models.JSONField(default=dict)

    def __str__(self) -> str:
        return f"{self.operation} {self.idempotency_key}"


class StatusChange(models.Model):
    """The append-only ledger of marketing-status changes.

    `delta` is this row's effect on the billable count at `effective_at`: +1 an
    upgrade (now) or a cancelled downgrade (at the pending date, undoing the -1
    scheduled there), -1 a scheduled downgrade (at the update date) or a deleted
    billable contact (now), 0 the rollover that applies an already-counted
    downgrade. So the billable count at any instant t is the sum of `delta` over
    rows with effective_at <= t, and each contact is counted exactly once.
    Rows outlive their contact (no database constraint on contact_id).
    """

    contact = models.ForeignKey(
        Contact,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # covered by statuschange_contact_idx
        related_name="status_changes",
    )
    request = models.ForeignKey(
        StatusChangeRequest,
        on_delete=models.PROTECT,
        db_index=False,  # covered by statuschange_once_per_request
        related_name="changes",
    )
    action = models.CharField(max_length=24, choices=LedgerAction.choices)
    from_status = models.CharField(max_length=16, choices=LedgerStatus.choices)
    to_status = models.CharField(max_length=16, choices=LedgerStatus.choices)
    requested_at = models.DateTimeField()
    effective_at = models.DateTimeField()
    delta = models.SmallIntegerField()
    source_type = models.CharField(max_length=20, choices=StatusSourceType.choices)
    source_id = models.CharField(max_length=64, blank=True)
    source_name = models.CharField(max_length=200, blank=True)
    # No index: ledger inserts stay lean; only deleting a user looks rows up by actor.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        db_index=False,
        related_name="+",
    )

    class Meta:
        ordering = ["-id"]
        verbose_name = "status change (ledger)"
        verbose_name_plural = "status ledger"
        constraints = [
            models.UniqueConstraint(
                fields=["request", "contact", "action"], name="statuschange_once_per_request"
            ),
            models.CheckConstraint(
                condition=models.Q(delta__in=[-1, 0, 1]), name="statuschange_delta_unit"
            ),
        ]
        indexes = [
            # A contact's history, newest first.
            models.Index(fields=["contact", "-id"], name="statuschange_contact_idx"),
            # The replay walks rows in effective order.
            models.Index(fields=["effective_at"], name="statuschange_effective_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id}: {self.from_status} → {self.to_status} ({self.action})"


class PeriodUsage(models.Model):
    """The billable count of one billing period [period_start, period_end), kept by the status service.

    Updated in the same transaction as every change with F()/GREATEST (O(1) a
    change). `scheduled_downgrades` are the pending downgrades that take effect at
    `period_end`: the next period opens with live_count - scheduled_downgrades.
    """

    period_start = models.DateTimeField(unique=True)
    period_end = models.DateTimeField()
    opening_count = models.PositiveIntegerField(default=0)
    live_count = models.PositiveIntegerField(default=0)
    peak_count = models.PositiveIntegerField(default=0)
    scheduled_downgrades = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-period_start"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(period_end__gt=models.F("period_start")),
                name="periodusage_end_after_start",
            ),
            models.CheckConstraint(
                condition=models.Q(peak_count__gte=models.F("live_count"))
                & models.Q(peak_count__gte=models.F("opening_count")),
                name="periodusage_peak_is_max",
            ),
            models.CheckConstraint(
                condition=models.Q(scheduled_downgrades__lte=models.F("live_count")),
                name="periodusage_scheduled_within_live",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.period_start:%Y-%m-%d}: peak {self.peak_count}"


class UsageState(models.Model):
    """One row, locked first by every status change: it serialises the counters and
    keeps the change clock monotonic, so the ledger's order is the counters' order."""

    last_change_at = models.DateTimeField(null=True, blank=True)
    # Every downgrade due at or before this instant has been applied: the next rollover
    # reads only (rolled_over_through, as_of] of contact_pending_idx, however many
    # applied downgrades the index keeps ("non-marketing since").
    rolled_over_through = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return "usage state"


class EngagementType(models.TextChoices):
    EMAIL_OPEN = "email_open", "Email open"
    EMAIL_CLICK = "email_click", "Email click"
    FORM_SUBMISSION = "form_submission", "Form submission"
    PAGE_VIEW = "page_view", "Page view"
    AD_CLICK = "ad_click", "Ad click"
    CHAT = "chat", "Chat"
    MEETING_BOOKED = "meeting_booked", "Meeting booked"


class EngagementEvent(models.Model):
    """Something a contact did. Workflows, lead scores and hygiene read these.

    Append-only; `external_id` (when the sender has one) makes ingestion idempotent.
    """

    contact = models.ForeignKey(
        Contact,
        on_delete=models.CASCADE,
        db_index=False,  # covered by engagement_contact_idx
        related_name="engagement_events",
    )
    type = models.CharField(max_length=24, choices=EngagementType.choices)
    occurred_at = models.DateTimeField()
    # Unique by the constraint below, not unique=True, which on PostgreSQL adds a second,
    # LIKE-pattern index: one more write for every event ingested. NULL, not "", for "no
    # id": the unique constraint then admits any number of events without one.
    external_id = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    properties = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [
            # A contact's recent events of a type (criteria "N events of type T in D days"), and
            # the score recompute, which walks contacts by id. Nothing reads events across
            # contacts by type or time (the admin lists them by id, "engaged within N days"
            # reads Contact.last_engaged_at), so no second index: each one costs every event
            # ingested a write (a fifth of the ingestion's time at 1M contacts).
            models.Index(fields=["contact", "type", "-occurred_at"], name="engagement_contact_idx"),
        ]
        constraints = [
            # Ingestion is idempotent by the sender's id (INSERT … ON CONFLICT (external_id)).
            models.UniqueConstraint(fields=["external_id"], name="engagement_external_id_once"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id}: {self.type} at {self.occurred_at:%Y-%m-%d %H:%M}"


# --- intake ---
#
# Forms, chatflows, connected apps and ad accounts (DESIGN §1.3). Each owns a Source of its
# kind (created with it), so every contact it creates records where it came from; each says
# its own marketing default, which contacts.services.contacts_creation_policy reads.

# The contact fields a form may ask (email is always asked, and required). The status,
# consent flags, scores and engagement are never set by a visitor.
FORM_ASKABLE_FIELDS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "company",
    "phone",
    "contact_type",
)

FORM_FIELD_KEYS = frozenset({"name", "required", "label"})


def validate_form_fields(value) -> None:
    """A form's `fields`: a list of {"name": askable field, "required": bool, "label": str}."""
    from django.core.exceptions import ValidationError

    if not isinstance(value, list):
        raise ValidationError('Give a list, e.g. [{"name": "first_name", "required": true}].')
    seen: set[str] = set()
    for position, item in enumerate(value, start=1):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValidationError(f'Field {position}: give an object with a "name".')
        unknown = set(item) - FORM_FIELD_KEYS
        if unknown:
            raise ValidationError(
                f"Field {position}: unknown keys {', '.join(sorted(unknown))} "
                "(allowed: name, required, label)."
            )
        name = item["name"]
        if name == "email":
            raise ValidationError("email is always asked and required; do not list it.")
        if name not in FORM_ASKABLE_FIELDS:
            raise ValidationError(
                f"Field {position}: {name!r} is not a contact field a form may ask "
                f"(allowed: {', '.join(FORM_ASKABLE_FIELDS)})."
            )
        if name in seen:
            raise ValidationError(f"Field {position}: {name!r} is listed twice.")
        seen.add(name)
        if not isinstance(item.get("required", False), bool):
            raise ValidationError(f'Field {position}: "required" must be true or false.')
        if not isinstance(item.get("label", ""), str) or len(item.get("label", "")) > 200:
            raise ValidationError(f'Field {position}: "label" must be text (200 characters).')


class Form(BaseModel):
    """One of our own forms, served at /forms/<slug>/ and POST /api/intake/forms/<slug>/."""

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    fields = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_form_fields],
        help_text=(
            'The contact fields asked besides email, in order, e.g. [{"name": "first_name", '
            '"required": true}, {"name": "company", "label": "Organisation"}]. Allowed: '
            + ", ".join(FORM_ASKABLE_FIELDS)
            + "."
        ),
    )
    consent_label = models.CharField(
        max_length=300,
        blank=True,
        help_text="Text of a consent checkbox; empty: no checkbox. An unticked optional "
        "checkbox means the submission never makes the contact marketing.",
    )
    consent_required = models.BooleanField(
        default=False, help_text="The form cannot be sent without ticking the consent checkbox."
    )
    create_as_marketing = models.BooleanField(
        null=True,
        blank=True,
        help_text="New contacts from this form are marketing. Empty: the account's default.",
    )
    upgrade_existing = models.BooleanField(
        default=True,
        help_text="When the form creates marketing contacts, an existing non-marketing contact "
        "who submits it becomes marketing too (logged in the ledger with this form as reason).",
    )
    success_message = models.CharField(
        max_length=500, default="Thank you: we have received your details."
    )
    is_active = models.BooleanField(default=True, help_text="Inactive forms answer 404.")
    source = models.OneToOneField(
        Source, on_delete=models.PROTECT, editable=False, related_name="form"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class FormSubmission(models.Model):
    """One submission of a form (ours, or an external one when `form` is empty). Append-only."""

    form = models.ForeignKey(
        Form, null=True, blank=True, on_delete=models.PROTECT, related_name="submissions"
    )
    external_form = models.CharField(
        max_length=200, blank=True, help_text="The external form's identifier."
    )
    page_url = models.CharField(max_length=1000, blank=True)
    contact = models.ForeignKey(
        Contact,
        on_delete=models.CASCADE,
        db_index=False,  # covered by formsubmission_contact_idx
        related_name="form_submissions",
    )
    data = models.JSONField(default=dict)
    consent = models.BooleanField(null=True, blank=True)
    created_contact = models.BooleanField(default=False)
    upgraded = models.BooleanField(
        default=False, help_text="An existing non-marketing contact was made marketing."
    )
    # "form:<id>:<client key>" or "external:<client key>": a retried submission stores nothing.
    submission_key = models.CharField(max_length=250, null=True, blank=True, unique=True)
    submitted_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["contact", "-id"], name="formsubmission_contact_idx"),
            # A form's submissions, newest first (admin count and list).
            models.Index(fields=["form", "-id"], name="formsubmission_form_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.form or self.external_form} at {self.submitted_at:%Y-%m-%d %H:%M}"


class Chatflow(BaseModel):
    """A chat bot or conversation entry point; its visitors become contacts."""

    name = models.CharField(max_length=200, unique=True)
    marketing = models.BooleanField(
        default=False, help_text="Contacts this chatflow creates are marketing contacts."
    )
    is_active = models.BooleanField(default=True)
    source = models.OneToOneField(
        Source, on_delete=models.PROTECT, editable=False, related_name="chatflow"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class TokenHolder(models.Model):
    """A machine caller with its own secret: only a SHA-256 of the token is stored."""

    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    token_hint = models.CharField(
        max_length=16, editable=False, help_text="The token's first characters, to recognise it."
    )
    token_created_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        abstract = True


class ConnectedApp(TokenHolder, BaseModel):
    """An integration that pushes contacts with its own token."""

    name = models.CharField(max_length=200, unique=True)
    marketing = models.BooleanField(
        default=False,
        help_text="Contacts this app creates from now on are marketing (earlier ones stay as "
        "they are).",
    )
    marketing_enabled_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="When marketing was last switched on."
    )
    two_way_sync = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    source = models.OneToOneField(
        Source, on_delete=models.PROTECT, editable=False, related_name="connected_app"
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(marketing=False, marketing_enabled_at__isnull=True)
                | models.Q(marketing=True, marketing_enabled_at__isnull=False),
                name="connectedapp_marketing_has_time",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class AdPlatform(models.TextChoices):
    FACEBOOK = "facebook", "Facebook / Instagram"
    LINKEDIN = "linkedin", "LinkedIn"
    GOOGLE = "google", "Google Ads"
    OTHER = "other", "Other"


class AdAccount(TokenHolder, BaseModel):
    """An ad platform account whose lead forms send leads here (webhook with its token)."""

    name = models.CharField(max_length=200, unique=True)
    platform = models.CharField(max_length=16, choices=AdPlatform.choices)
    marketing = models.BooleanField(
        default=True, help_text="Contacts created from this account's leads are marketing."
    )
    is_active = models.BooleanField(default=True)
    source = models.OneToOneField(
        Source, on_delete=models.PROTECT, editable=False, related_name="ad_account"
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AdLead(models.Model):
    """A lead received from an ad account, once per platform lead id."""

    ad_account = models.ForeignKey(AdAccount, on_delete=models.PROTECT, related_name="leads")
    lead_id = models.CharField(max_length=200)
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="ad_leads")
    created_contact = models.BooleanField(default=False)
    data = models.JSONField(default=dict)
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["ad_account", "lead_id"], name="adlead_once_per_account"
            )
        ]

    def __str__(self) -> str:
        return f"{self.ad_account_id}:{self.lead_id}"


# --- imports ---


class ImportStatus(models.TextChoices):
    DRAFT = "draft", "Draft (mapping the columns)"
    PREVIEWED = "previewed", "Previewed (waiting for confirmation)"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    HELD = "held", "Done; marketing part waits for approval"


class ContactImport(BaseModel):
    """One CSV file imported into the contacts (DESIGN §1.3, "import").

    Upload → column mapping → preview → commit (a background job). Contacts are
    upserted by normalised email; the import never downgrades a marketing status,
    and makes contacts marketing only when `marketing` is set (through the status
    service, ledger source type "import", id = this import's id).
    """

    file = models.FileField(upload_to="imports/%Y/%m/", max_length=300)
    file_name = models.CharField(max_length=255, help_text="The name the file was uploaded with.")
    file_size = models.PositiveBigIntegerField(default=0)
    file_hash = models.CharField(max_length=64, db_index=True, help_text="SHA-256 of the file.")
    delimiter = models.CharField(max_length=1, default=",")
    columns = models.JSONField(default=list, help_text="The file's header, as read.")
    mapping = models.JSONField(
        default=dict, help_text="Column name → contact field ('' ignores the column)."
    )
    marketing = models.BooleanField(
        default=False, help_text="Set every contact in this import as a marketing contact."
    )
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="imports")
    status = models.CharField(
        max_length=16, choices=ImportStatus.choices, default=ImportStatus.DRAFT, db_index=True
    )
    phase = models.CharField(max_length=40, blank=True)
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    rows = models.PositiveIntegerField(default=0, help_text="Data rows in the file.")
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    unchanged_count = models.PositiveIntegerField(default=0)
    invalid_count = models.PositiveIntegerField(default=0)
    duplicate_count = models.PositiveIntegerField(default=0)
    marketing_count = models.PositiveIntegerField(
        default=0,
        help_text="Contacts that became marketing (or had a pending downgrade cancelled).",
    )
    preview = models.JSONField(default=dict, blank=True)
    marketing_result = models.JSONField(null=True, blank=True)
    message = models.TextField(blank=True, help_text="Why it failed, or what waits for approval.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    committed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    previewed_at = models.DateTimeField(null=True, blank=True)
    committed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "contact import"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=ImportStatus.values),
                name="contactimport_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.file_name}"

    @property
    def progress_percent(self) -> int:
        if self.status in (ImportStatus.DONE, ImportStatus.HELD):
            return 100
        if not self.total_rows:
            return 0
        return min(100, self.processed_rows * 100 // self.total_rows)

    @property
    def marketing_idempotency_key(self) -> str:
        return f"import:{self.pk}:marketing"


class ImportRowError(models.Model):
    """A row the import could not take (or took once: a duplicate), with its line and column."""

    contact_import = models.ForeignKey(
        ContactImport,
        on_delete=models.CASCADE,
        db_index=False,  # covered by importrowerror_line_idx
        related_name="row_errors",
    )
    line = models.PositiveIntegerField(help_text="Line number in the file (the header is line 1).")
    column = models.CharField(max_length=200, blank=True)
    message = models.CharField(max_length=500)

    class Meta:
        ordering = ["line", "id"]
        indexes = [models.Index(fields=["contact_import", "line"], name="importrowerror_line_idx")]

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class ImportedContact(models.Model):
    """The contacts of a marketing import: the durable set its status change targets.

    Written only for imports marked marketing. The status service is given
    `Contact.objects.filter(pk__in=<these rows>)`, a query that stays valid when
    billing's guardrails hold the change and an approver runs it later.
    """

    contact_import = models.ForeignKey(
        ContactImport,
        on_delete=models.CASCADE,
        db_index=False,  # covered by importedcontact_once
        related_name="+",
    )
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["contact_import", "contact"], name="importedcontact_once"
            ),
        ]

    def __str__(self) -> str:
        return f"import {self.contact_import_id}: contact {self.contact_id}"


# --- communications (export, marketing-send guard, ad audiences) ---
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
