"""Intake channels: our forms, external forms' submissions, chatflows, connected apps, ad accounts."""

from __future__ import annotations

from django.db import models

from contacts.models import Contact, Source
from crm.models import BaseModel

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
    # The client's id for the submission (`submission_id` or the Idempotency-Key header;
    # empty: none): a retry to the same form stores nothing new. Unique per form — ours by
    # `form`, an external one by `external_form` — not across forms, which may be sent
    # the same id.
    submission_id = models.CharField(max_length=100, blank=True, default="")
    submitted_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["form", "submission_id"],
                condition=models.Q(form__isnull=False) & ~models.Q(submission_id=""),
                name="formsubmission_once_per_form",
            ),
            models.UniqueConstraint(
                fields=["external_form", "submission_id"],
                condition=models.Q(form__isnull=True) & ~models.Q(submission_id=""),
                name="formsubmission_once_per_external_form",
            ),
        ]
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
