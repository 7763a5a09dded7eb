"""Shapes of the billing API (rendering only). Money is integer minor units of `currency`."""

import datetime as dt

from django.utils import timezone
from rest_framework import serializers

from billing.models import AlertKind, Subscription
from contacts.api.serializers import ContactFilterField
from crm.api import StrictModelSerializer, StrictSerializer
from crm.calendar import BillingCalendar
from crm.models import Account


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


class SubscriptionSerializer(StrictModelSerializer):
    """The subscription: money in integer minor units of `currency` (cents for USD)."""

    class Meta:
        model = Subscription
        fields = [
            "included_contacts",
            "base_price",
            "block_size",
            "block_price",
            "currency",
            "alert_thresholds",
            "alert_recipients",
            "spike_threshold",
            "updated_at",
        ]
        read_only_fields = ["alert_thresholds", "alert_recipients", "spike_threshold", "updated_at"]
        extra_kwargs = {
            "included_contacts": {"help_text": "Marketing contacts in the tier."},
            "base_price": {"help_text": "Monthly base price, minor units of currency."},
            "block_size": {"help_text": "Marketing contacts per overage block (at least 1)."},
            "block_price": {"help_text": "Price of one block a month, minor units of currency."},
            "currency": {"help_text": "ISO 4217 code, e.g. USD, EUR, SEK."},
        }


class CalendarSerializer(StrictModelSerializer):
    """The billing calendar (the account's update day and time zone) and the period now."""

    effective_update_day = serializers.IntegerField(
        read_only=True, help_text="The day periods start on: 1 on a yearly plan."
    )
    period_start = serializers.SerializerMethodField(help_text="The current period's start.")
    next_update_date = serializers.SerializerMethodField(
        help_text="The current period's end (exclusive): pending downgrades take effect then."
    )

    class Meta:
        model = Account
        fields = [
            "update_day",
            "yearly_plan",
            "time_zone",
            "effective_update_day",
            "period_start",
            "next_update_date",
        ]

    def _bounds(self, account: Account):
        return BillingCalendar.for_account(account).period_bounds(timezone.now())

    def get_period_start(self, account: Account) -> dt.datetime:
        return self._bounds(account)[0]

    def get_next_update_date(self, account: Account) -> dt.datetime:
        return self._bounds(account)[1]


class CloseRequestSerializer(StrictSerializer):
    dry_run = serializers.BooleanField(
        default=False, help_text="Say what would be closed and invoiced; write nothing."
    )
    as_of = serializers.DateTimeField(
        required=False,
        help_text="Close the periods ended by this instant (default: now). Not in the future.",
    )


class CloseOutcomeSerializer(serializers.Serializer):
    period_start = serializers.DateTimeField()
    period_end = serializers.DateTimeField(help_text="Exclusive.")
    status = serializers.ChoiceField(
        choices=["closed", "already_closed", "held", "would_close"],
        help_text="closed; already_closed (a concurrent close won); held (the ledger replay "
        "and the counters disagree: no invoice); would_close (a dry run).",
    )
    peak_count = serializers.IntegerField(help_text="The peak from the ledger replay.")
    counter_peak_count = serializers.IntegerField(help_text="The peak the counters kept.")
    invoice_number = serializers.CharField(help_text="Empty in a dry run or when held.")
    total = serializers.IntegerField(help_text="The invoice total, minor units of currency.")
    currency = serializers.CharField()
    rollover_applied = serializers.IntegerField(
        help_text="Downgrades that took effect at the period's end."
    )


class CloseResultSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField()
    detail = serializers.CharField(help_text="What happened, in a sentence.")
    outcomes = CloseOutcomeSerializer(many=True, help_text="One per period that had ended.")
