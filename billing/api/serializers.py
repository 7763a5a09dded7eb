"""Shapes of the billing API (rendering only)."""

from rest_framework import serializers


class BillingUsageSerializer(serializers.Serializer):
    """billing.selectors.billing_usage(): this period's counts against the subscription."""

    live_count = serializers.IntegerField(help_text="Billable (marketing) contacts now.")
    peak_count = serializers.IntegerField(help_text="The period's peak so far: what is billed.")
    opening_count = serializers.IntegerField(help_text="Billable contacts when the period began.")
    included_contacts = serializers.IntegerField(help_text="Marketing contacts in the tier.")
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField(help_text="Exclusive.")
    next_update_date = serializers.DateTimeField(
        help_text="When pending downgrades take effect (the next period's start)."
    )
    pending_downgrades = serializers.IntegerField(
        help_text="Contacts scheduled non-marketing at the next update date."
    )
    overage_blocks = serializers.IntegerField(help_text="Blocks billed above the tier at the peak.")
    currency = serializers.CharField()
