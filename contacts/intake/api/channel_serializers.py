"""Shapes of the channel management API: forms, chatflows, connected apps and ad accounts.

The same fields as their admin pages. A connected app's or ad account's token is never
read back: it appears once, in the answer that issued it (`IssuedTokenSerializer`).
"""

from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from contacts.intake.models import AdAccount, Chatflow, ConnectedApp, Form
from contacts.intake.services import form_creates_marketing
from crm.api import StrictModelSerializer


class FormSerializer(StrictModelSerializer):
    creates_marketing = serializers.SerializerMethodField(
        help_text="What the form does now: its own setting, or the account's default for forms "
        "when create_as_marketing is null."
    )
    hosted_page = serializers.SerializerMethodField(help_text="The form's public page.")

    class Meta:
        model = Form
        fields = [
            "id",
            "name",
            "slug",
            "fields",
            "consent_label",
            "consent_required",
            "create_as_marketing",
            "creates_marketing",
            "upgrade_existing",
            "success_message",
            "is_active",
            "source",
            "hosted_page",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["source", "created_at", "updated_at"]

    def get_creates_marketing(self, form: Form) -> bool:
        return form_creates_marketing(form)

    def get_hosted_page(self, form: Form) -> str:
        return reverse("contacts_public:form", args=[form.slug])


class ChatflowSerializer(StrictModelSerializer):
    class Meta:
        model = Chatflow
        fields = ["id", "name", "marketing", "is_active", "source", "created_at", "updated_at"]
        read_only_fields = ["source", "created_at", "updated_at"]


class ConnectedAppSerializer(StrictModelSerializer):
    class Meta:
        model = ConnectedApp
        fields = [
            "id",
            "name",
            "marketing",
            "marketing_enabled_at",
            "two_way_sync",
            "is_active",
            "token_hint",
            "token_created_at",
            "source",
            "created_at",
            "updated_at",
        ]
        read_only_fields = [
            "marketing_enabled_at",
            "token_hint",
            "token_created_at",
            "source",
            "created_at",
            "updated_at",
        ]
        extra_kwargs = {
            "marketing_enabled_at": {
                "help_text": "When marketing was last switched on: only contacts created after "
                "it are marketing."
            },
        }


class AdAccountSerializer(StrictModelSerializer):
    leads_url = serializers.SerializerMethodField(help_text="Where the platform sends leads.")

    class Meta:
        model = AdAccount
        fields = [
            "id",
            "name",
            "platform",
            "marketing",
            "is_active",
            "token_hint",
            "token_created_at",
            "source",
            "leads_url",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["token_hint", "token_created_at", "source", "created_at", "updated_at"]

    def get_leads_url(self, account: AdAccount) -> str:
        return reverse("intake-ad-leads", args=[account.pk])


class IssuedTokenSerializer(serializers.Serializer):
    token = serializers.CharField(
        help_text="The new secret, shown only in this answer (only its SHA-256 is stored). "
        "Send it as `Authorization: Bearer <token>`; the previous token stops working."
    )
    token_hint = serializers.CharField(help_text="Its first characters, to recognise it later.")
    token_created_at = serializers.DateTimeField()


class ConnectedAppCreatedSerializer(ConnectedAppSerializer):
    token = serializers.CharField(
        read_only=True, help_text="The app's secret, shown only in this answer."
    )

    class Meta(ConnectedAppSerializer.Meta):
        fields = [*ConnectedAppSerializer.Meta.fields, "token"]


class AdAccountCreatedSerializer(AdAccountSerializer):
    token = serializers.CharField(
        read_only=True, help_text="The account's webhook secret, shown only in this answer."
    )

    class Meta(AdAccountSerializer.Meta):
        fields = [*AdAccountSerializer.Meta.fields, "token"]


class ChannelCostSerializer(serializers.Serializer):
    """contacts.intake.selectors.channel_marketing_forecast, for one channel."""

    marketing = serializers.BooleanField(
        help_text="The channel's setting now (the estimate is the same either way)."
    )
    created_recently = serializers.IntegerField(
        help_text="Contacts the channel created in the last 30 days."
    )
    expected_new = serializers.IntegerField(
        help_text="At that rate, new contacts it would create before the period ends."
    )
    period_end = serializers.DateTimeField()
    cost = serializers.DictField(
        allow_null=True,
        help_text="Billing's price of making that many contacts marketing now: peak, blocks "
        "and invoice total before and after, the change to the invoice (minor units of "
        "`currency`) and the guardrails' hold reason, if any.",
    )
