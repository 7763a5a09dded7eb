"""Shapes of the billing API (rendering only). Money is integer minor units of `currency`."""

from rest_framework import serializers

from billing.models import AlertKind
from contacts.api.serializers import ContactFilterField
from crm.api import StrictSerializer


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


class InvoiceLineSerializer(serializers.Serializer):
    kind = serializers.CharField()
    description = serializers.CharField()
    amount = serializers.IntegerField(help_text="Minor units; an adjustment may be negative.")
    details = serializers.JSONField(help_text="The inputs the line was computed from.")


class InvoiceSerializer(serializers.Serializer):
    number = serializers.CharField()
    status = serializers.CharField(
        help_text="draft during the grace window, then final (never changes)."
    )
    currency = serializers.CharField()
    total = serializers.IntegerField(help_text="Minor units; the sum of the lines.")
    period_start = serializers.DateTimeField(source="period.start")
    period_end = serializers.DateTimeField(source="period.end")
    peak_count = serializers.IntegerField(source="period.peak_count")
    created_at = serializers.DateTimeField()
    finalise_after = serializers.DateTimeField()
    finalised_at = serializers.DateTimeField(allow_null=True)
    lines = InvoiceLineSerializer(many=True)


class BillingPeriodSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField(help_text="Exclusive.")
    status = serializers.CharField(help_text="closed, or discrepancy (held: no invoice).")
    opening_count = serializers.IntegerField()
    peak_count = serializers.IntegerField(help_text="From the ledger replay.")
    counter_peak_count = serializers.IntegerField(help_text="From the live counters.")
    billed_peak_count = serializers.IntegerField()
    closing_count = serializers.IntegerField()
    discrepancy = serializers.JSONField()
    closed_at = serializers.DateTimeField()
    invoice_number = serializers.SerializerMethodField()
    invoice_total = serializers.SerializerMethodField()

    def get_invoice_number(self, period) -> str | None:
        invoice = getattr(period, "invoice", None)
        return invoice.number if invoice else None

    def get_invoice_total(self, period) -> int | None:
        invoice = getattr(period, "invoice", None)
        return invoice.total if invoice else None


class CostPreviewRequestSerializer(StrictSerializer):
    """Exactly one of would_add, ids or filter."""

    would_add = serializers.IntegerField(
        required=False,
        min_value=0,
        max_value=10**9,
        help_text="How many contacts would become marketing.",
    )
    ids = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=10**18 - 1),
        required=False,
        max_length=10_000,
        help_text="Contacts that would be set marketing (those already marketing add nothing).",
    )
    filter = ContactFilterField(required=False)

    def validate(self, attrs):
        if sum(key in attrs for key in ("would_add", "ids", "filter")) != 1:
            raise serializers.ValidationError(
                {"non_field_errors": ["Give exactly one of would_add, ids or filter."]}
            )
        return attrs


class CostPreviewSerializer(serializers.Serializer):
    would_add = serializers.IntegerField()
    peak_before = serializers.IntegerField()
    peak_after = serializers.IntegerField()
    blocks_before = serializers.IntegerField()
    blocks_after = serializers.IntegerField()
    total_before = serializers.IntegerField(help_text="This period's invoice now, minor units.")
    total_after = serializers.IntegerField(help_text="…if the contacts became marketing now.")
    invoice_delta = serializers.IntegerField()
    headroom_before = serializers.IntegerField()
    currency = serializers.CharField()
    hold_reason = serializers.CharField(
        allow_null=True,
        help_text="Why the guardrails would hold this change for approval, if they would.",
    )
