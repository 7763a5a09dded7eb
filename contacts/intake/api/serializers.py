"""Serializers of the intake endpoints."""

from __future__ import annotations

from rest_framework import serializers

from contacts.models import (
    ContactType,
    MarketingStatus,
    normalise_email,
)
from crm.api import StrictSerializer


class IntakeAcceptedSerializer(serializers.Serializer):
    """What a public intake endpoint answers: the same whatever happened to the contact
    (created, updated, a retry, a bot caught by the honeypot), so it reveals nothing."""

    accepted = serializers.BooleanField()
    message = serializers.CharField()


class FormSubmissionInputSerializer(StrictSerializer):
    """A form submission's shape and types (the form's own fields are then checked by
    contacts.intake.forms.SubmissionForm)."""

    email = serializers.EmailField()
    first_name = serializers.CharField(
        required=False, allow_blank=True, help_text="If the form asks it."
    )
    last_name = serializers.CharField(
        required=False, allow_blank=True, help_text="If the form asks it."
    )
    company = serializers.CharField(
        required=False, allow_blank=True, help_text="If the form asks it."
    )
    phone = serializers.CharField(
        required=False, allow_blank=True, help_text="If the form asks it."
    )
    contact_type = serializers.ChoiceField(
        choices=ContactType.choices,
        required=False,
        allow_blank=True,
        help_text="If the form asks it.",
    )
    consent = serializers.BooleanField(
        required=False, help_text="The consent checkbox, if the form has one."
    )
    submission_id = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=100,
        help_text="The client's id for this submission: a retry with it stores nothing new "
        "(empty: none).",
    )
    website = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="Leave empty (a trap for bots: if filled, nothing is stored).",
    )


class IntakeContactFieldsSerializer(StrictSerializer):
    """Contact fields an external form, a chat visitor or an ads lead may give."""

    email = serializers.EmailField(max_length=254)
    first_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    last_name = serializers.CharField(required=False, allow_blank=True, max_length=100)
    company = serializers.CharField(required=False, allow_blank=True, max_length=200)
    phone = serializers.CharField(required=False, allow_blank=True, max_length=40)

    def validate_email(self, value: str) -> str:
        return normalise_email(value)


class ExternalFormSubmissionSerializer(StrictSerializer):
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
        allow_blank=True,
        max_length=150,
        help_text="The conversation's id: the same conversation sent again changes nothing "
        "(empty: none).",
    )
    website = serializers.CharField(
        required=False, allow_blank=True, help_text="Honeypot: leave empty."
    )


class IntegrationBatchSerializer(StrictSerializer):
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


class AdLeadsSerializer(StrictSerializer):
    leads = AdLeadSerializer(many=True, allow_empty=False, max_length=500)


class AdLeadResultSerializer(serializers.Serializer):
    lead_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["created", "updated", "duplicate"])
    contact_id = serializers.IntegerField()


class AdLeadsResultSerializer(serializers.Serializer):
    results = AdLeadResultSerializer(many=True)
