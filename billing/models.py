from django.core.validators import MinValueValidator
from django.db import models
from django.utils.formats import date_format

from billing.money import format_money
from crm.models import BaseModel
from crm.rows import row_get_or_create


def default_alert_thresholds() -> list[int]:
    return [75, 90, 98, 100]


class Subscription(BaseModel):
    """What the organisation pays: a base price for a tier of marketing contacts, then blocks.

    Money is in integer minor units of `currency` (cents for USD).
    """

    SINGLETON_PK = 1

    included_contacts = models.PositiveIntegerField(
        default=2_000, help_text="Marketing contacts in the tier."
    )
    base_price = models.PositiveBigIntegerField(
        default=80_000, help_text="Monthly base price, minor units."
    )
    block_size = models.PositiveIntegerField(
        default=5_000, validators=[MinValueValidator(1)], help_text="Contacts per overage block."
    )
    block_price = models.PositiveBigIntegerField(
        default=22_500, help_text="Price of one block, minor units."
    )
    currency = models.CharField(max_length=3, default="USD")
    alert_thresholds = models.JSONField(
        default=default_alert_thresholds,
        blank=True,
        help_text="Percentages of the tier that raise an alert once a period; each new overage block does too.",
    )
    alert_recipients = models.TextField(
        blank=True, help_text="Email addresses for billing alerts, one per line or comma-separated."
    )
    spike_threshold = models.PositiveIntegerField(
        default=1_000,
        help_text="Alert when more than this many contacts become marketing within an hour.",
    )

    class Meta:
        permissions = [("approve_overage", "Can approve operations past the billing guardrails")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(block_size__gte=1), name="subscription_block_size_positive"
            ),
        ]

    def __str__(self) -> str:
        price = format_money(self.base_price, self.currency)
        return f"{self.included_contacts:,} marketing contacts for {price} a month"

    @classmethod
    def load(cls) -> "Subscription":
        return row_get_or_create(cls, lookup={"pk": cls.SINGLETON_PK})[0]


class BillingPeriodStatus(models.TextChoices):
    CLOSED = "closed", "Closed (invoiced)"
    DISCREPANCY = "discrepancy", "Held: ledger replay disagrees with the counters"


class BillingPeriod(models.Model):
    """A billing period that has ended and been closed (or held for a discrepancy).

    One row per period start (unique), so a close run twice, or by two workers at
    once, can record a period only once.
    """

    start = models.DateTimeField(unique=True)
    end = models.DateTimeField()
    status = models.CharField(max_length=16, choices=BillingPeriodStatus.choices)
    opening_count = models.PositiveIntegerField(help_text="Billable count at the first instant.")
    closing_count = models.PositiveIntegerField(help_text="Billable count just before the end.")
    peak_count = models.PositiveIntegerField(help_text="Peak from the ledger replay.")
    billed_peak_count = models.PositiveIntegerField(
        default=0, help_text="The peak invoiced so far (the invoice, then any adjustments)."
    )
    counter_peak_count = models.PositiveIntegerField(help_text="Peak kept by the live counters.")
    discrepancy = models.JSONField(default=dict, blank=True)
    closed_at = models.DateTimeField()

    class Meta:
        ordering = ["-start"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(end__gt=models.F("start")), name="billingperiod_end_after_start"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.start:%Y-%m-%d} – {self.end:%Y-%m-%d}"


class FinalInvoiceError(Exception):
    """A final invoice, or a line of one, was about to change."""


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    FINAL = "final", "Final"


class Invoice(models.Model):
    """The bill of one period, in integer minor units. Final invoices never change."""

    period = models.OneToOneField(BillingPeriod, on_delete=models.PROTECT, related_name="invoice")
    number = models.CharField(max_length=32, unique=True)
    status = models.CharField(
        max_length=8, choices=InvoiceStatus.choices, default=InvoiceStatus.DRAFT
    )
    currency = models.CharField(max_length=3)
    total = models.BigIntegerField()
    created_at = models.DateTimeField()
    finalise_after = models.DateTimeField(
        help_text="End of the grace window: then it becomes final."
    )
    finalised_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-period__start"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status="draft", finalised_at__isnull=True)
                | models.Q(status="final", finalised_at__isnull=False),
                name="invoice_final_has_date",
            ),
        ]

    def __str__(self) -> str:
        return self.number

    def save(self, *args, **kwargs):
        if self.pk and Invoice.objects.filter(pk=self.pk, status=InvoiceStatus.FINAL).exists():
            raise FinalInvoiceError(f"Invoice {self.number} is final and cannot change.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise FinalInvoiceError("Invoices are never deleted.")


class InvoiceLineKind(models.TextChoices):
    BASE = "base", "Base price"
    OVERAGE = "overage", "Overage blocks"
    ADJUSTMENT = "adjustment", "Adjustment for an earlier period"


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    kind = models.CharField(max_length=16, choices=InvoiceLineKind.choices)
    description = models.CharField(max_length=300)
    amount = models.BigIntegerField(help_text="Minor units; an adjustment may be negative.")
    details = models.JSONField(default=dict, help_text="The inputs this line was computed from.")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.description}: {self.amount}"

    def save(self, *args, **kwargs):
        if Invoice.objects.filter(pk=self.invoice_id, status=InvoiceStatus.FINAL).exists():
            raise FinalInvoiceError("Lines of a final invoice cannot change.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise FinalInvoiceError("Invoice lines are never deleted.")


class AlertKind(models.TextChoices):
    THRESHOLD = "threshold", "Share of the tier reached"
    BLOCK = "block", "New overage block"
    SPIKE = "spike", "Spike of new marketing contacts"
    DISCREPANCY = "discrepancy", "Ledger replay disagrees with the counters"


class Alert(models.Model):
    """An alert fired once per period and threshold (the unique constraint makes it once)."""

    period_start = models.DateTimeField()
    kind = models.CharField(max_length=16, choices=AlertKind.choices)
    threshold = models.BigIntegerField(
        help_text="Percent, block number, hour bucket or 0, by kind."
    )
    fired_at = models.DateTimeField()
    peak_count = models.PositiveIntegerField(default=0)
    message = models.CharField(max_length=500)
    recipients = models.TextField(blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-fired_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["period_start", "kind", "threshold"], name="alert_once_per_period"
            ),
        ]

    def __str__(self) -> str:
        return self.message


class DailyUsage(models.Model):
    """The day's maximum billable count (not a sample), and how many became marketing that day."""

    day = models.DateField(unique=True)
    max_count = models.PositiveIntegerField(default=0)
    became_marketing = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-day"]
        verbose_name = "daily usage record"
        verbose_name_plural = "daily usage records"

    def __str__(self) -> str:
        return f"{date_format(self.day)}: at most {self.max_count:,} marketing"


class HourlyUpgrades(models.Model):
    """Contacts that became marketing in each hour: the spike alert reads two rows, not the ledger."""

    hour = models.DateTimeField(unique=True)
    count = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "hourly upgrade count"
        verbose_name_plural = "hourly upgrade counts"

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00}: {self.count}"
