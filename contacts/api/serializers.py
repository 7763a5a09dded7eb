"""Shapes of the contacts API: input checking and rendering only.

Business rules (a source's default, locked sources, uniqueness, the status
transitions) live in contacts.services; these serializers normalise and check the
request's shape and name the field when it is wrong.
"""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from contacts.filters import contact_filter_params
from contacts.models import (
    AdAudience,
    Communication,
    CommunicationType,
    Contact,
    ContactImport,
    ContactList,
    LedgerAction,
    LedgerStatus,
    MarketingEmail,
    MarketingStatus,
    Source,
    SourceKind,
    StatusChange,
    StatusSourceType,
    normalise_email,
)

# The bulk endpoint's cap on explicit ids (larger sets go "by filter").
BULK_MAX_IDS = 10_000
# Contact ids are BIGINTs.
MAX_ID = 2**63 - 1
# Client keys are stored namespaced ("api:<user id>:<key>") in a 200-character column.
IDEMPOTENCY_KEY_MAX = 150

STATUS_ENDPOINT_HINT = (
    "The marketing status is not writable here: use POST /api/contacts/{id}/marketing-status/ "
    "(or /api/contacts/marketing-status/ for many)."
)

CONTACT_FIELDS = [
    "id",
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
    "source",
    "source_name",
    "source_kind",
    "marketing_status",
    "marketing_pending_from",
    "marketing_reason_type",
    "marketing_reason_id",
    "marketing_reason_name",
    "marketing_changed_at",
    "created_at",
    "updated_at",
]


class ContactSerializer(serializers.ModelSerializer):
    """A contact as the API shows it, and the fields an update may change.

    `marketing_status` is the effective status at the request's instant (context
    "now"); `marketing_pending_from` the date a scheduled downgrade takes effect.
    """

    source = serializers.PrimaryKeyRelatedField(read_only=True)
    source_name = serializers.CharField(source="source.name", read_only=True)
    source_kind = serializers.ChoiceField(
        source="source.kind", choices=SourceKind.choices, read_only=True
    )
    marketing_status = serializers.SerializerMethodField()
    marketing_pending_from = serializers.SerializerMethodField()

    class Meta:
        model = Contact
        fields = CONTACT_FIELDS
        extra_kwargs = {
            # Uniqueness is checked by the service on the normalised address (one rule, one
            # place); the model's validator would compare the raw, mixed-case input.
            "email": {"validators": []},
        }

    def _now(self) -> dt.datetime:
        return self.context.get("now") or timezone.now()

    @extend_schema_field(serializers.ChoiceField(choices=MarketingStatus.choices))
    def get_marketing_status(self, contact: Contact) -> str:
        return contact.effective_status(self._now())

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_marketing_pending_from(self, contact: Contact) -> str | None:
        pending = contact.pending_from(self._now())
        return serializers.DateTimeField().to_representation(pending) if pending else None

    def validate_email(self, value: str) -> str:
        return normalise_email(value)

    def validate(self, attrs):
        sent = self.initial_data
        if self.instance is not None:
            # A round-tripped representation is fine; an attempt to change is not silent.
            status = sent.get("marketing_status")
            if status is not None and status != self.instance.effective_status(self._now()):
                raise serializers.ValidationError({"marketing_status": [STATUS_ENDPOINT_HINT]})
            source = sent.get("source")
            if source is not None and str(source) != str(self.instance.source_id):
                raise serializers.ValidationError(
                    {"source": ["The source of a contact is fixed when it is created."]}
                )
            if "marketing" in sent:
                raise serializers.ValidationError({"marketing": [STATUS_ENDPOINT_HINT]})
        return attrs


class ContactCreateSerializer(ContactSerializer):
    """Creating: `source` is writable (default: the manual-entry source) and `marketing`
    (write-only) asks for a status other than the source's default."""

    source = serializers.PrimaryKeyRelatedField(
        queryset=Source.objects.all(),
        required=False,
        help_text="Source id; default: the manual-entry source ('Created by hand').",
    )
    marketing = serializers.BooleanField(
        write_only=True,
        required=False,
        allow_null=True,
        default=None,
        help_text=(
            "Create as a marketing (true) or non-marketing (false) contact instead of the "
            "source's default. true needs contacts.change_marketing_status and is refused "
            "for locked sources."
        ),
    )

    class Meta(ContactSerializer.Meta):
        fields = [*CONTACT_FIELDS, "marketing"]

    def validate(self, attrs):
        if "marketing_status" in self.initial_data:
            raise serializers.ValidationError(
                {
                    "marketing_status": [
                        'Not writable: send "marketing": true or false to choose the status '
                        "of a new contact (default: its source's)."
                    ]
                }
            )
        return attrs


class SourceSerializer(serializers.ModelSerializer):
    locked = serializers.BooleanField(
        read_only=True, help_text="Contacts from locked kinds are always non-marketing."
    )
    kind_label = serializers.CharField(source="get_kind_display", read_only=True)
    default_marketing = serializers.BooleanField(
        required=False,
        help_text="New contacts from this source are marketing. Default: the kind's default.",
    )

    class Meta:
        model = Source
        fields = [
            "id",
            "name",
            "kind",
            "kind_label",
            "default_marketing",
            "locked",
            "created_at",
            "updated_at",
        ]


class MarketingStatusChangeSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=MarketingStatus.choices)
    idempotency_key = serializers.CharField(
        required=False,
        max_length=IDEMPOTENCY_KEY_MAX,
        help_text="A retry with the same key returns the first answer and changes nothing "
        "(the Idempotency-Key header works too).",
    )


class BulkMarketingStatusChangeSerializer(MarketingStatusChangeSerializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
        required=False,
        allow_empty=False,
        max_length=BULK_MAX_IDS,
        help_text=f"Contact ids (at most {BULK_MAX_IDS:,}); unknown ids match nothing.",
    )
    filter = serializers.DictField(
        required=False,
        help_text="The list endpoint's filters as an object, e.g. "
        '{"lifecycle_stage": "lead", "pending": true}.',
    )
    preview = serializers.BooleanField(
        default=False, help_text="Only count what would change; nothing is written."
    )

    def validate_filter(self, value):
        return contact_filter_params(value)

    def validate(self, attrs):
        if ("ids" in attrs) == ("filter" in attrs):
            raise serializers.ValidationError(
                {"non_field_errors": ["Give exactly one of ids or filter."]}
            )
        return attrs


class StatusChangeResultSerializer(serializers.Serializer):
    """contacts.services.StatusChangeResult, as the API returns it."""

    operation = serializers.CharField()
    idempotency_key = serializers.CharField(
        allow_null=True, help_text="The key the client sent, if any."
    )
    requested_at = serializers.DateTimeField()
    matched = serializers.IntegerField()
    changed = serializers.IntegerField(help_text="Became marketing now.")
    already = serializers.IntegerField(help_text="Already in the asked-for state.")
    scheduled = serializers.IntegerField(help_text="Downgrades scheduled for effective_from.")
    cancelled = serializers.IntegerField(help_text="Pending downgrades cancelled.")
    effective_from = serializers.DateTimeField(allow_null=True)
    live_count = serializers.IntegerField()
    peak_count = serializers.IntegerField()


class ContactStatusChangeResultSerializer(StatusChangeResultSerializer):
    contact = ContactSerializer()


class StatusPreviewSerializer(serializers.Serializer):
    """contacts.services.StatusPreview: what a bulk change would do."""

    operation = serializers.CharField()
    at = serializers.DateTimeField()
    matched = serializers.IntegerField()
    would_change = serializers.IntegerField()
    would_schedule = serializers.IntegerField()
    would_cancel = serializers.IntegerField()
    already = serializers.IntegerField()
    effective_from = serializers.DateTimeField(allow_null=True)
    live_count = serializers.IntegerField()
    live_after = serializers.IntegerField()
    peak_count = serializers.IntegerField()
    peak_after = serializers.IntegerField()
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField()
    extra = serializers.DictField(
        help_text='Facts other apps add to a preview, e.g. billing\'s "cost" (peak and '
        "invoice before and after, in minor units)."
    )


class HeldSerializer(serializers.Serializer):
    """A set-marketing held by billing's guardrails until someone approves it."""

    held = serializers.BooleanField()
    detail = serializers.CharField(help_text="Why, and where it waits for approval.")
    idempotency_key = serializers.CharField(allow_null=True)


class StatusHistorySerializer(serializers.ModelSerializer):
    action = serializers.ChoiceField(choices=LedgerAction.choices)
    from_status = serializers.ChoiceField(choices=LedgerStatus.choices)
    to_status = serializers.ChoiceField(choices=LedgerStatus.choices)
    source_type = serializers.ChoiceField(choices=StatusSourceType.choices)
    contact_id = serializers.IntegerField(read_only=True)
    actor_username = serializers.CharField(
        source="actor.get_username", read_only=True, allow_null=True
    )

    class Meta:
        model = StatusChange
        fields = [
            "id",
            "contact_id",
            "action",
            "from_status",
            "to_status",
            "requested_at",
            "effective_at",
            "delta",
            "source_type",
            "source_id",
            "source_name",
            "actor",
            "actor_username",
        ]
        read_only_fields = fields


# --- intake ---


class IntakeAcceptedSerializer(serializers.Serializer):
    """What a public intake endpoint answers: the same whatever happened to the contact
    (created, updated, a retry, a bot caught by the honeypot), so it reveals nothing."""

    accepted = serializers.BooleanField()
    message = serializers.CharField()


class FormSubmissionInputSerializer(serializers.Serializer):
    """For the schema only: the form's own fields are checked by contacts.forms.SubmissionForm."""

    email = serializers.EmailField()
    first_name = serializers.CharField(required=False, help_text="If the form asks it.")
    last_name = serializers.CharField(required=False, help_text="If the form asks it.")
    company = serializers.CharField(required=False, help_text="If the form asks it.")
    phone = serializers.CharField(required=False, help_text="If the form asks it.")
    contact_type = serializers.CharField(required=False, help_text="If the form asks it.")
    consent = serializers.BooleanField(
        required=False, help_text="The consent checkbox, if the form has one."
    )
    submission_id = serializers.CharField(
        required=False,
        max_length=100,
        help_text="The client's id for this submission: a retry with it stores nothing new.",
    )
    website = serializers.CharField(
        required=False, help_text="Leave empty (a trap for bots: if filled, nothing is stored)."
    )


class IntakeContactFieldsSerializer(serializers.Serializer):
    """Contact fields an external form, a chat visitor or an ads lead may give."""

    email = serializers.EmailField(max_length=254)
    first_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    last_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    company = serializers.CharField(required=False, allow_blank=True, max_length=200)
    phone = serializers.CharField(required=False, allow_blank=True, max_length=40)

    def validate_email(self, value: str) -> str:
        return normalise_email(value)


class ExternalFormSubmissionSerializer(serializers.Serializer):
    form_id = serializers.CharField(
        max_length=200, help_text="The external form's identifier (e.g. its id or name)."
    )
    page_url = serializers.CharField(required=False, allow_blank=True, max_length=1000, default="")
    fields = IntakeContactFieldsSerializer()
    submission_id = serializers.CharField(required=False, max_length=100)
    website = serializers.CharField(
        required=False, allow_blank=True, help_text="Honeypot: leave empty."
    )


class ChatIntakeSerializer(IntakeContactFieldsSerializer):
    conversation_id = serializers.CharField(
        required=False,
        max_length=150,
        help_text="The conversation's id: the same conversation sent again changes nothing.",
    )
    website = serializers.CharField(
        required=False, allow_blank=True, help_text="Honeypot: leave empty."
    )


class IntegrationBatchSerializer(serializers.Serializer):
    """The batch's shape only; each item is checked by the service (row-level report)."""

    contacts = serializers.ListField(
        child=serializers.JSONField(),
        allow_empty=False,
        help_text=(
            "Up to 10,000 objects: email plus any of first_name, last_name, company, phone, "
            "lifecycle_stage, lead_status, contact_type. Empty values do not overwrite."
        ),
    )


class IntegrationItemResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    email = serializers.CharField()
    status = serializers.ChoiceField(choices=["created", "updated", "unchanged", "error"])
    id = serializers.IntegerField(allow_null=True)
    marketing_status = serializers.ChoiceField(choices=MarketingStatus.choices, allow_null=True)
    changed_fields = serializers.ListField(child=serializers.CharField())
    messages = serializers.ListField(child=serializers.CharField())


class IntegrationBatchResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()
    errors = serializers.IntegerField()
    marketing = serializers.IntegerField(help_text="New contacts made marketing.")
    marketing_held = serializers.CharField(
        allow_blank=True,
        help_text="Set when billing's guardrails hold making the new contacts marketing.",
    )
    reason = serializers.CharField(help_text="Why new contacts get their status.")
    items = IntegrationItemResultSerializer(many=True)


class AdLeadSerializer(IntakeContactFieldsSerializer):
    lead_id = serializers.CharField(max_length=200, help_text="The platform's lead id.")
    properties = serializers.DictField(
        required=False, help_text="Anything else the platform sends (campaign, ad, form…)."
    )


class AdLeadsSerializer(serializers.Serializer):
    leads = AdLeadSerializer(many=True, allow_empty=False, max_length=500)


class AdLeadResultSerializer(serializers.Serializer):
    lead_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["created", "updated", "duplicate"])
    contact_id = serializers.IntegerField()


class AdLeadsResultSerializer(serializers.Serializer):
    results = AdLeadResultSerializer(many=True)


# --- imports ---


@extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
class ImportMappingField(serializers.Field):
    """A mapping object {"column": "field"}; in a multipart upload, the same as a JSON string."""

    default_error_messages = {
        "invalid": 'Give an object {{"column name": "field", …}} (a JSON string in a form upload).'
    }

    def to_internal_value(self, data):
        import json

        if isinstance(data, str):
            try:
                data = json.loads(data) if data.strip() else {}
            except ValueError:
                self.fail("invalid")
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in data.items()
        ):
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class ContactImportCreateSerializer(serializers.Serializer):
    file = serializers.FileField(
        help_text="A CSV file, UTF-8 (with or without BOM), comma or semicolon separated."
    )
    mapping = ImportMappingField(
        required=False,
        help_text='Column name → field ("" ignores the column), over the columns detected by their names.',
    )
    marketing = serializers.BooleanField(
        default=False,
        help_text="Set every contact in this import as marketing (needs contacts.change_marketing_status).",
    )
    source = serializers.PrimaryKeyRelatedField(
        queryset=Source.objects.filter(kind=SourceKind.IMPORT),
        required=False,
        allow_null=True,
        help_text='An import source for new contacts (default: "CSV import").',
    )

    def validate_file(self, value):
        from contacts.services import ImportFileError, import_check_size

        try:
            import_check_size(value.size)
        except ImportFileError as error:
            raise serializers.ValidationError(str(error)) from error
        return value


class ContactImportSerializer(serializers.ModelSerializer):
    source_name = serializers.CharField(source="source.name", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    progress = serializers.SerializerMethodField()
    counts = serializers.SerializerMethodField()
    errors_url = serializers.SerializerMethodField()

    class Meta:
        model = ContactImport
        fields = [
            "id",
            "file_name",
            "file_size",
            "file_hash",
            "status",
            "phase",
            "progress",
            "columns",
            "mapping",
            "marketing",
            "source",
            "source_name",
            "counts",
            "preview",
            "marketing_result",
            "message",
            "errors_url",
            "created_by",
            "created_at",
            "previewed_at",
            "committed_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    @extend_schema_field(
        {
            "type": "object",
            "properties": {
                "processed_rows": {"type": "integer"},
                "total_rows": {"type": "integer"},
                "percent": {"type": "integer"},
            },
        }
    )
    def get_progress(self, obj) -> dict:
        return {
            "processed_rows": obj.processed_rows,
            "total_rows": obj.total_rows,
            "percent": obj.progress_percent,
        }

    @extend_schema_field({"type": "object", "additionalProperties": {"type": "integer"}})
    def get_counts(self, obj) -> dict:
        return {
            "rows": obj.rows,
            "created": obj.created_count,
            "updated": obj.updated_count,
            "unchanged": obj.unchanged_count,
            "invalid": obj.invalid_count,
            "duplicates": obj.duplicate_count,
            "marketing": obj.marketing_count,
        }

    def get_errors_url(self, obj) -> str:
        request = self.context.get("request")
        path = f"/api/imports/{obj.pk}/errors/"
        return request.build_absolute_uri(path) if request else path


# --- communications ---


class MarketingEmailSerializer(serializers.ModelSerializer):
    """A marketing email. Status and counts are written by the send only."""

    sent_by = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = MarketingEmail
        fields = [
            "id",
            "name",
            "subject",
            "body",
            "from_email",
            "audience_filter",
            "audience_list",
            "status",
            "send_started_at",
            "sent_at",
            "sent_by",
            "audience_count",
            "recipient_count",
            "excluded_non_marketing",
            "excluded_unsubscribed",
            "excluded_bounced",
            "sent_count",
            "failed_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "status",
            "send_started_at",
            "sent_at",
            "audience_count",
            "recipient_count",
            "excluded_non_marketing",
            "excluded_unsubscribed",
            "excluded_bounced",
            "sent_count",
            "failed_count",
            "created_at",
            "updated_at",
        ]

    def validate_audience_filter(self, value):
        if value in (None, {}):
            return {}
        try:
            return contact_filter_params(value)
        except DjangoValidationError as error:
            detail = error.message_dict if hasattr(error, "error_dict") else error.messages
            raise serializers.ValidationError(detail) from error


class SendBreakdownSerializer(serializers.Serializer):
    """contacts.selectors.SendBreakdown: who would get the email, and why not the others."""

    audience = serializers.IntegerField()
    will_receive = serializers.IntegerField()
    excluded = serializers.IntegerField()
    excluded_non_marketing = serializers.IntegerField(
        help_text="Excluded as non-marketing (first in precedence)."
    )
    excluded_unsubscribed = serializers.IntegerField(
        help_text="Marketing but unsubscribed (second in precedence)."
    )
    excluded_bounced = serializers.IntegerField(
        help_text="Marketing, subscribed, hard bounced (third in precedence)."
    )
    unsubscribed_any = serializers.IntegerField(
        help_text="Every unsubscribed contact, overlaps included."
    )
    bounced_any = serializers.IntegerField(help_text="Every bounced contact, overlaps included.")
    already_sent = serializers.IntegerField(help_text="Sent (or attempted) by this send already.")


class MarketingEmailSendResultSerializer(serializers.Serializer):
    status = serializers.CharField()
    breakdown = SendBreakdownSerializer()
    email = MarketingEmailSerializer()


class MembershipRequestSerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
        required=False,
        allow_empty=False,
        max_length=BULK_MAX_IDS,
        help_text=f"Contact ids (at most {BULK_MAX_IDS:,}); unknown ids match nothing.",
    )
    filter = serializers.DictField(
        required=False, help_text='The contacts list filters, e.g. {"lifecycle_stage": "lead"}.'
    )
    preview = serializers.BooleanField(default=False, help_text="Only count; nothing is written.")

    def validate_filter(self, value):
        return contact_filter_params(value)

    def validate(self, attrs):
        if ("ids" in attrs) == ("filter" in attrs):
            raise serializers.ValidationError(
                {"non_field_errors": ["Give exactly one of ids or filter."]}
            )
        return attrs


class MembershipChangeSerializer(serializers.Serializer):
    operation = serializers.CharField()
    preview = serializers.BooleanField()
    matched = serializers.IntegerField()
    added = serializers.IntegerField()
    already_member = serializers.IntegerField()
    refused_non_marketing = serializers.IntegerField(
        help_text="Not marketing: refused (ad audiences accept marketing contacts only)."
    )
    removed = serializers.IntegerField()
    not_member = serializers.IntegerField()


class AdAudienceSerializer(serializers.ModelSerializer):
    class Meta:
        model = AdAudience
        fields = ["id", "name", "platform", "created_at", "updated_at"]


class ContactListSerializer(serializers.ModelSerializer):
    class Meta:
        model = ContactList
        fields = ["id", "name", "description", "created_at", "updated_at"]


class CommunicationSerializer(serializers.ModelSerializer):
    """A non-marketing communication: any contact, logged with its type."""

    contact = serializers.PrimaryKeyRelatedField(queryset=Contact.objects.all())
    type = serializers.CharField(
        help_text="One of: " + ", ".join(CommunicationType.values) + ". Not 'marketing'."
    )
    body = serializers.CharField(write_only=True, trim_whitespace=False)
    idempotency_key = serializers.CharField(
        required=False, max_length=IDEMPOTENCY_KEY_MAX, write_only=True
    )

    class Meta:
        model = Communication
        fields = [
            "id",
            "contact",
            "type",
            "subject",
            "body",
            "to_address",
            "status",
            "error",
            "at",
            "actor",
            "idempotency_key",
        ]
        read_only_fields = ["to_address", "status", "error", "at", "actor"]

    def validate_type(self, value):
        if value == "marketing":
            raise serializers.ValidationError(
                "Marketing email is not a communication: create a marketing email "
                "(POST /api/marketing-emails/), whose send reaches only marketing, "
                "subscribed, unbounced contacts."
            )
        if value not in CommunicationType.values:
            raise serializers.ValidationError(
                f"Unknown type; use one of {', '.join(CommunicationType.values)}."
            )
        return value
