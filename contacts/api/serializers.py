"""Serializers of contacts, sources and status changes."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from contacts.filters import (
    contact_filter_as_json,
    contact_filter_params,
    contact_filter_schema,
    contact_filter_type_errors,
)
from contacts.models import (
    Contact,
    MarketingStatus,
    Source,
    SourceKind,
    StatusSourceType,
    normalise_email,
)
from contacts.status.models import (
    LedgerAction,
    LedgerStatus,
    StatusChange,
)
from crm.api import StrictModelSerializer, StrictSerializer

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


@extend_schema_field(contact_filter_schema())
class ContactFilterField(serializers.DictField):
    """A filter over contacts as an object (the list endpoint's filters), checked and turned
    into ContactFilter's parameters by contacts.filters.contact_filter_params."""

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("not_a_dict", input_type=type(data).__name__)
        errors = contact_filter_type_errors(data)
        if errors:
            raise serializers.ValidationError(errors)
        return contact_filter_params(data)

    def to_representation(self, value):
        return contact_filter_as_json(value)


class ContactSerializer(StrictModelSerializer):
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
            "for locked sources; without the permission a new contact is non-marketing."
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


class SourceSerializer(StrictModelSerializer):
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


class MarketingStatusChangeSerializer(StrictSerializer):
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
    filter = ContactFilterField(required=False)
    preview = serializers.BooleanField(
        default=False, help_text="Only count what would change; nothing is written."
    )

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
