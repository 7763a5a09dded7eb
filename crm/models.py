import zoneinfo
from typing import ClassVar

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models


class BaseModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class LeasedJob(models.Model):
    """A background job a worker runs under a lease: `crm.jobs` claims, renews and expires it.

    A subclass names the status a worker holds it in (`LEASE_RUNNING`), the one a job whose
    worker died gets (`LEASE_FAILED`), the text field that says why (`LEASE_MESSAGE_FIELD`)
    and what the job is called in that sentence (`LEASE_NOUN`).
    """

    LEASE_RUNNING: ClassVar[str]
    LEASE_FAILED: ClassVar[str]
    LEASE_MESSAGE_FIELD: ClassVar[str]
    LEASE_NOUN: ClassVar[str]

    lease_token = models.CharField(
        max_length=32, blank=True, default="", editable=False, help_text="The worker's claim."
    )
    lease_expires_at = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="The worker renews this as it works; past it, the job is taken for dead.",
    )

    class Meta:
        abstract = True


def validate_time_zone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(
            f"{value!r} is not a known time zone (e.g. Europe/Stockholm)."
        ) from exc


class Account(BaseModel):
    """The organisation's configuration: one row (pk=1).

    The billing calendar lives here rather than in `billing` because the status
    service in `contacts` needs it to date deferred downgrades, and `contacts`
    must not import `billing` (DESIGN §2).
    """

    SINGLETON_PK = 1

    name = models.CharField(max_length=200, default="My organisation")
    update_day = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(31)],
        help_text="Day of the month a billing period starts (1–31; clamped to the last day of short months).",
    )
    yearly_plan = models.BooleanField(
        default=False,
        help_text="Yearly plans update on the 1st of every month, whatever the update day.",
    )
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_time_zone],
        help_text="Periods start at local midnight in this time zone.",
    )
    # Intake defaults (DESIGN §1.3): here because `contacts` reads them and must not import billing.
    forms_create_marketing = models.BooleanField(
        default=True,
        help_text="Our own forms create marketing contacts, unless a form says otherwise.",
    )
    external_forms_marketing = models.BooleanField(
        default=True,
        help_text=(
            "External (non-native) forms create marketing contacts, and upgrade an existing "
            "non-marketing contact that submits one."
        ),
    )

    # Guardrails (DESIGN §1.4): here because the status service checks them under the usage
    # lock in `contacts`, which must not import billing.
    hard_cap = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Optional: an operation that would take the billable count past this waits for approval.",
    )
    operation_limit = models.PositiveIntegerField(
        null=True,
        blank=True,
        default=10_000,
        help_text="An operation that would make more new marketing contacts than this waits for approval.",
    )

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(update_day__gte=1, update_day__lte=31),
                name="account_update_day_1_31",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def load(cls) -> "Account":
        from crm.rows import row_get_or_create

        return row_get_or_create(cls, lookup={"pk": cls.SINGLETON_PK})[0]

    @property
    def effective_update_day(self) -> int:
        return 1 if self.yearly_plan else self.update_day
