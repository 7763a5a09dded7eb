"""Shapes of the billing API (rendering only). Money is integer minor units of `currency`."""

from rest_framework import serializers

from billing.models import AlertKind


class UsageEstimateSerializer(serializers.Serializer):
    base = serializers.IntegerField(help_text="Base price, minor units.")
    overage = serializers.IntegerField(help_text="Overage blocks × block price, minor units.")
    total = serializers.IntegerField(help_text="This period's invoice if it closed now.")


class UsageForecastSerializer(serializers.Serializer):
    peak_count = serializers.IntegerField(help_text="Forecast peak (the current peak is a floor).")
    rate_per_day = serializers.FloatField(help_text="Recent new marketing contacts per day.")
    days_left = serializers.FloatField()
    blocks = serializers.IntegerField()
    total = serializers.IntegerField(help_text="Forecast invoice total, minor units.")


class UsageAlertSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=AlertKind.choices)
    threshold = serializers.IntegerField(help_text="Percent, block number, hour bucket or 0.")
    message = serializers.CharField()
    fired_at = serializers.DateTimeField()


class BillingUsageSerializer(serializers.Serializer):
    """billing.selectors.billing_usage(): this period's counts against the subscription."""

    live_count = serializers.IntegerField(help_text="Billable (marketing) contacts now.")
    peak_count = serializers.IntegerField(help_text="The period's peak so far: what is billed.")
    opening_count = serializers.IntegerField(help_text="Billable contacts when the period began.")
    included_contacts = serializers.IntegerField(help_text="Marketing contacts in the tier.")
    percent_used = serializers.FloatField(
        allow_null=True, help_text="Peak as a percentage of the tier."
    )
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField(help_text="Exclusive.")
    next_update_date = serializers.DateTimeField(
        help_text="When pending downgrades take effect (the next period's start)."
    )
    pending_downgrades = serializers.IntegerField(
        help_text="Contacts scheduled non-marketing at the next update date."
    )
    pending_saving = serializers.IntegerField(
        help_text="What the pending downgrades save, minor units."
    )
    overage_blocks = serializers.IntegerField(help_text="Blocks billed above the tier at the peak.")
    headroom = serializers.IntegerField(
        help_text="Contacts that can still become marketing before the next block starts."
    )
    block_size = serializers.IntegerField()
    currency = serializers.CharField()
    estimate = UsageEstimateSerializer()
    forecast = UsageForecastSerializer()
    hard_cap = serializers.IntegerField(allow_null=True)
    alerts = UsageAlertSerializer(many=True, help_text="This period's unacknowledged alerts.")
