"""Serializers of outreach: marketing email, memberships, communications."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from contacts.api.serializers import BULK_MAX_IDS, IDEMPOTENCY_KEY_MAX, MAX_ID
from contacts.filters import contact_filter_params
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
