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
    BulkJobStatus,
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


class BulkStatusChangeResponseSerializer(serializers.Serializer):
    """The bulk status change's answer, one shape whether it ran or was only previewed
    (`preview`): for a preview the counts and figures are what the change would do."""

    preview = serializers.BooleanField(help_text="true: only counted, nothing was written.")
    operation = serializers.CharField()
    idempotency_key = serializers.CharField(
        allow_null=True, help_text="The key the client sent, if any (null for a preview)."
    )
    requested_at = serializers.DateTimeField(help_text="The instant of the change or preview.")
    matched = serializers.IntegerField()
    changed = serializers.IntegerField(help_text="Became (would become) marketing now.")
    already = serializers.IntegerField(help_text="Already in the asked-for state.")
    scheduled = serializers.IntegerField(
        help_text="Downgrades scheduled (that would be) for effective_from."
    )
    cancelled = serializers.IntegerField(help_text="Pending downgrades cancelled (would be).")
    effective_from = serializers.DateTimeField(allow_null=True)
    live_count = serializers.IntegerField(help_text="The live billable count after the change.")
    peak_count = serializers.IntegerField(help_text="This period's peak after the change.")
    extra = serializers.DictField(
        help_text='Facts other apps add to a preview, e.g. billing\'s "cost" (peak and '
        "invoice before and after, in minor units; for set non-marketing also what it saves "
        "from the next period); empty for a change that ran."
    )

    @staticmethod
    def from_preview(preview) -> dict:
        return {
            "preview": True,
            "operation": preview.operation,
            "idempotency_key": None,
            "requested_at": preview.at,
            "matched": preview.matched,
            "changed": preview.would_change,
            "already": preview.already,
            "scheduled": preview.would_schedule,
            "cancelled": preview.would_cancel,
            "effective_from": preview.effective_from,
            "live_count": preview.live_after,
            "peak_count": preview.peak_after,
            "extra": preview.extra,
        }

    @staticmethod
    def from_result(result, client_key: str | None) -> dict:
        return {
            "preview": False,
            "operation": result.operation,
            "idempotency_key": client_key,
            "requested_at": result.requested_at,
            "matched": result.matched,
            "changed": result.changed,
            "already": result.already,
            "scheduled": result.scheduled,
            "cancelled": result.cancelled,
            "effective_from": result.effective_from,
            "live_count": result.live_count,
            "peak_count": result.peak_count,
            "extra": {},
        }


class BulkStatusJobSerializer(serializers.Serializer):
    """A bulk status change running in the background (contacts.status.models.BulkStatusJob)."""

    id = serializers.IntegerField()
    url = serializers.SerializerMethodField(help_text="Where to poll the job.")
    status = serializers.ChoiceField(choices=BulkJobStatus.choices)
    operation = serializers.CharField()
    idempotency_key = serializers.SerializerMethodField(
        help_text="The key the client sent, if any."
    )
    criteria = serializers.SerializerMethodField(help_text="The filter it was asked with.")
    as_of = serializers.DateTimeField(help_text="The instant the filter was evaluated at.")
    total = serializers.IntegerField(help_text="Contacts the filter matched when it was asked.")
    done = serializers.IntegerField(help_text="Contacts gone through so far.")
    changed = serializers.IntegerField(
        help_text="Became marketing now, or were scheduled non-marketing (by operation)."
    )
    cancelled = serializers.IntegerField(help_text="Pending downgrades cancelled.")
    already = serializers.IntegerField(help_text="Already in the asked-for state.")
    held = serializers.IntegerField(help_text="Contacts waiting for approval (guardrails).")
    approval = serializers.IntegerField(
        source="approval_id", allow_null=True, help_text="The held change's approval id."
    )
    effective_from = serializers.DateTimeField(allow_null=True)
    message = serializers.CharField(help_text="Why it failed, or what waits for approval.")
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)

    def get_url(self, job) -> str:
        from django.urls import reverse

        path = reverse("contact-bulk-marketing-status-job", kwargs={"job_id": job.pk})
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def get_criteria(self, job) -> dict:
        criteria = dict(job.criteria or {})
        if isinstance(criteria.get("filter"), dict):  # stored as query parameters (text)
            criteria["filter"] = contact_filter_as_json(criteria["filter"])
        return criteria

    def get_idempotency_key(self, job) -> str | None:
        # Stored namespaced by the user ("api:<user id>:<key>"); the client sees its own.
        prefix = f"api:{job.requested_by_id}:"
        key = job.idempotency_key
        return key[len(prefix) :] if key.startswith(prefix) else None


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
