"""Serializers of outreach: marketing email, memberships, communications."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from contacts.api.serializers import (
    BULK_MAX_IDS,
    IDEMPOTENCY_KEY_MAX,
    MAX_ID,
    ContactFilterField,
)
from contacts.filters import contact_filter_schema
from contacts.models import (
    Contact,
)
from contacts.outreach.models import (
    AdAudience,
    Communication,
    CommunicationType,
    ContactList,
    MarketingEmail,
)
from crm.api import StrictModelSerializer, StrictSerializer


@extend_schema_field(
    {
        **{k: v for k, v in contact_filter_schema().items() if k != "minProperties"},
        "description": "The audience as a contact filter (the contacts list's filters as an "
        "object); {} when the audience is a list (audience_list).",
    }
)
class AudienceFilterField(ContactFilterField):
    def to_internal_value(self, data):
        return {} if data == {} else super().to_internal_value(data)


class MarketingEmailSerializer(StrictModelSerializer):
    """A marketing email. Status and counts are written by the send only."""

    audience_filter = AudienceFilterField(required=False)
    sent_by = serializers.PrimaryKeyRelatedField(
        read_only=True, allow_null=True, help_text="Who sent it; null until it is sent."
    )

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


class MembershipRequestSerializer(StrictSerializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_ID),
        required=False,
        allow_empty=False,
        max_length=BULK_MAX_IDS,
        help_text=f"Contact ids (at most {BULK_MAX_IDS:,}); unknown ids match nothing.",
    )
    filter = ContactFilterField(required=False)
    preview = serializers.BooleanField(default=False, help_text="Only count; nothing is written.")

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


class AdAudienceSerializer(StrictModelSerializer):
    class Meta:
        model = AdAudience
        fields = ["id", "name", "platform", "created_at", "updated_at"]


class ContactListSerializer(StrictModelSerializer):
    class Meta:
        model = ContactList
        fields = ["id", "name", "description", "created_at", "updated_at"]


class CommunicationSerializer(StrictModelSerializer):
    """A non-marketing communication: any contact, logged with its type."""

    contact = serializers.PrimaryKeyRelatedField(queryset=Contact.objects.all())
    type = serializers.ChoiceField(
        choices=CommunicationType.choices,
        help_text="Not 'marketing': marketing email is sent through /api/marketing-emails/.",
        error_messages={
            "invalid_choice": "Unknown type; use one of "
            + ", ".join(CommunicationType.values)
            + "."
        },
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

    def to_internal_value(self, data):
        if isinstance(data, dict) and data.get("type") == "marketing":
            raise serializers.ValidationError(
                {
                    "type": [
                        "Marketing email is not a communication: create a marketing email "
                        "(POST /api/marketing-emails/), whose send reaches only marketing, "
                        "subscribed, unbounced contacts."
                    ]
                }
            )
        return super().to_internal_value(data)
