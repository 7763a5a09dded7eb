"""Workflows, enrollments and runs; scoring rules; hygiene policies and rotation plans."""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from contacts.models import EngagementType
from crm.models import BaseModel

# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---


# --- engagement scoring (issue 5, item 7) ---
#
# A contact's lead score is the sum, over its engagement events, of the points of the
# enabled rules for the event's type (workflows.services: `scores_apply_events` adds the
# new events' points on ingestion, `scores_recompute` rebuilds every score from the events).

SCORING_MAX_DAYS = 3650
SCORING_MAX_POINTS = 1000


class ScoringRule(BaseModel):
    """Points for each engagement event of a type: plain, in a window, or decaying.

    * plain: every event of the type counts `points`, however old;
    * `window_days` N: only events of the last N days count (`points` each);
    * `half_life_days` H: an event counts `points × 0.5^(age in days / H)`.

    A window and a half-life exclude each other (the database refuses both). Several rules
    may share a type: their points add up. Points may be negative (an unsubscribe-like
    signal).
    """

    name = models.CharField(max_length=200, blank=True)
    event_type = models.CharField(max_length=24, choices=EngagementType.choices)
    points = models.IntegerField(
        validators=[
            MinValueValidator(-SCORING_MAX_POINTS),
            MaxValueValidator(SCORING_MAX_POINTS),
        ],
        help_text=f"Per event; may be negative ({-SCORING_MAX_POINTS:,} to {SCORING_MAX_POINTS:,}).",
    )
    window_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(SCORING_MAX_DAYS)],
        help_text="Only events of the last N days count. Leave empty for no window.",
    )
    half_life_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(SCORING_MAX_DAYS)],
        help_text="An event's points halve every N days. Not with a window.",
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["event_type", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(window_days__isnull=True)
                | models.Q(half_life_days__isnull=True),
                name="scoringrule_window_or_half_life",
                violation_error_message="Choose a window or a half-life, not both.",
            ),
            models.CheckConstraint(
                condition=models.Q(window_days__gte=1) | models.Q(window_days__isnull=True),
                name="scoringrule_window_positive",
            ),
            models.CheckConstraint(
                condition=models.Q(half_life_days__gte=1) | models.Q(half_life_days__isnull=True),
                name="scoringrule_half_life_positive",
            ),
        ]

    def __str__(self) -> str:
        label = self.name or f"{self.get_event_type_display()} {self.points:+d}"
        if self.window_days:
            return f"{label} (last {self.window_days} days)"
        if self.half_life_days:
            return f"{label} (half-life {self.half_life_days} days)"
        return label

    @property
    def kind(self) -> str:
        if self.window_days:
            return "window"
        if self.half_life_days:
            return "decay"
        return "plain"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.window_days and self.half_life_days:
            raise ValidationError({"half_life_days": "Choose a window or a half-life, not both."})


# --- hygiene, rotation, savings (issue 5, items 8-10) ---


# Unengaged = no engagement in N days; N is 1..3650 (ten years), the criteria's day limit.
MAX_UNENGAGED_DAYS = 3_650
DEFAULT_UNENGAGED_DAYS = 90
# A rotation plan keeps at most this many contacts marketing (its ids travel as lists).
MAX_ROTATION_SIZE = 100_000


def empty_criteria() -> dict:
    return {"filterGroups": []}


class HygieneSchedule(models.TextChoices):
    MANUAL = "manual", "Only when run by hand"
    BEFORE_UPDATE = "before_update", "N days before each update date"
    INTERVAL = "interval", "Every N days"


class HygieneOptions(models.Model):
    """What a hygiene pass selects: the union of the ticked reasons (DESIGN §1.6)."""

    include_unsubscribed = models.BooleanField(
        default=True, help_text="Marketing contacts unsubscribed from marketing email."
    )
    include_hard_bounced = models.BooleanField(
        default=True, help_text="Marketing contacts whose email hard bounced."
    )
    include_unengaged = models.BooleanField(
        default=False,
        help_text="Marketing contacts with no engagement in N days (never engaged included) "
        "and created more than N days ago.",
    )
    unengaged_days = models.PositiveIntegerField(
        default=DEFAULT_UNENGAGED_DAYS,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_UNENGAGED_DAYS)],
    )
    criteria = models.JSONField(
        default=empty_criteria,
        blank=True,
        help_text="Any other contacts to include (criteria, HubSpot's filterGroups); "
        "no groups: none.",
    )

    class Meta:
        abstract = True

    def options(self) -> dict:
        return {
            "include_unsubscribed": self.include_unsubscribed,
            "include_hard_bounced": self.include_hard_bounced,
            "include_unengaged": self.include_unengaged,
            "unengaged_days": self.unengaged_days,
            "criteria": self.criteria or empty_criteria(),
        }


class HygienePolicy(HygieneOptions, BaseModel):
    """A saved hygiene pass; enabled with a schedule, the beat runs it (workflows.run_hygiene)."""

    name = models.CharField(max_length=200, unique=True)
    enabled = models.BooleanField(default=False)
    schedule = models.CharField(
        max_length=16, choices=HygieneSchedule.choices, default=HygieneSchedule.BEFORE_UPDATE
    )
    days_before_update = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(27)],
        help_text="Before each update date: run this many days ahead (1–27).",
    )
    interval_days = models.PositiveSmallIntegerField(
        default=7,
        validators=[MinValueValidator(1), MaxValueValidator(365)],
        help_text="On an interval: run every this many days.",
    )

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "hygiene policies"
        permissions = [("view_savings", "Can view the marketing-contact savings report")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(schedule__in=HygieneSchedule.values),
                name="hygienepolicy_schedule_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class RunTrigger(models.TextChoices):
    WIZARD = "wizard", "Wizard"
    MANUAL = "manual", "Run now (admin)"
    SCHEDULE = "schedule", "Schedule"
    COMMAND = "command", "Command"


class HygieneRun(models.Model):
    """One hygiene pass: what it selected, scheduled and saves. Written only by the service.

    `idempotency_key` is unique: a double-submitted wizard or a retried beat inserts
    one row, and the status change under the same key schedules once.
    """

    policy = models.ForeignKey(
        HygienePolicy, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    name = models.CharField(max_length=200)
    trigger = models.CharField(max_length=16, choices=RunTrigger.choices)
    idempotency_key = models.CharField(max_length=200, unique=True)
    options = models.JSONField(default=dict)
    at = models.DateTimeField()
    matched = models.PositiveIntegerField(
        default=0, help_text="Billable contacts without a pending change that the options select."
    )
    scheduled = models.PositiveIntegerField(default=0)
    effective_from = models.DateTimeField(null=True, blank=True)
    saving = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="A month's invoice saving from the next period (minor units).",
    )
    currency = models.CharField(max_length=3, blank=True)
    breakdown = models.JSONField(default=dict, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["policy", "-id"], name="hygienerun_policy_idx")]

    def __str__(self) -> str:
        return f"{self.name} at {self.at:%Y-%m-%d %H:%M}"


class RotationRanking(models.TextChoices):
    LEAD_SCORE = "lead_score", "Lead score (lowest leaves first)"
    ENGAGEMENT = "engagement", "Last engagement (least recent leaves first)"


class RotationPlan(BaseModel):
    """Keep at most `size` contacts of a pool marketing at a time (DESIGN §1.6).

    Members are the contacts the plan made marketing (`RotationMember`). Within
    `lead_days` before each update date the plan schedules its `rotate_per_period`
    lowest-ranked members non-marketing; once the period's rollover has run it
    promotes the best non-marketing contacts of the pool into the free slots.
    """

    name = models.CharField(max_length=200, unique=True)
    criteria = models.JSONField(
        default=empty_criteria, help_text="The pool (criteria, HubSpot's filterGroups)."
    )
    size = models.PositiveIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(MAX_ROTATION_SIZE)],
        help_text="K: at most this many of the plan's contacts are billable at any instant.",
    )
    ranking = models.CharField(
        max_length=16, choices=RotationRanking.choices, default=RotationRanking.LEAD_SCORE
    )
    rotate_per_period = models.PositiveIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(MAX_ROTATION_SIZE)],
        help_text="R: members demoted before each update date (the lowest ranked).",
    )
    lead_days = models.PositiveSmallIntegerField(
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(27)],
        help_text="Schedule the demotions this many days before the update date (1–27).",
    )
    enabled = models.BooleanField(default=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(size__gte=1), name="rotationplan_size_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(ranking__in=RotationRanking.values),
                name="rotationplan_ranking_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class RotationMember(models.Model):
    """A contact the plan made marketing. `leaving_at`: its scheduled demotion's date;
    `left_at`: when it stopped being billable (closed by the next promotion step)."""

    plan = models.ForeignKey(
        RotationPlan,
        on_delete=models.CASCADE,
        db_index=False,  # covered by rotationmember_active_idx
        related_name="members",
    )
    contact = models.ForeignKey("contacts.Contact", on_delete=models.CASCADE, related_name="+")
    joined_at = models.DateTimeField()
    leaving_at = models.DateTimeField(null=True, blank=True)
    left_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # A contact is an active member of a plan at most once.
            models.UniqueConstraint(
                fields=["plan", "contact"],
                condition=models.Q(left_at__isnull=True),
                name="rotationmember_active_once",
            ),
        ]
        indexes = [
            models.Index(fields=["plan", "left_at", "contact"], name="rotationmember_active_idx")
        ]

    def __str__(self) -> str:
        return f"plan {self.plan_id}: contact {self.contact_id}"


class RotationStep(models.TextChoices):
    DEMOTE = "demote", "Demote (before the update date)"
    PROMOTE = "promote", "Promote (after the rollover)"


class RotationRunStatus(models.TextChoices):
    DONE = "done", "Done"
    HELD = "held", "Held for billing approval"
    SKIPPED = "skipped", "Nothing to do"


class RotationRun(models.Model):
    """One step of a plan for one update date; unique per (plan, step, boundary)."""

    plan = models.ForeignKey(RotationPlan, on_delete=models.CASCADE, related_name="runs")
    step = models.CharField(max_length=8, choices=RotationStep.choices)
    boundary = models.DateTimeField(
        help_text="The update date: the one demoted toward, or the period start promoted after."
    )
    idempotency_key = models.CharField(max_length=200, unique=True)
    status = models.CharField(max_length=8, choices=RotationRunStatus.choices)
    at = models.DateTimeField()
    members_before = models.PositiveIntegerField(default=0)
    demoted = models.PositiveIntegerField(default=0)
    promoted = models.PositiveIntegerField(default=0)
    members_after = models.PositiveIntegerField(default=0)
    candidate_ids = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["plan", "step", "boundary"], name="rotationrun_once_per_boundary"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.plan_id} {self.step} {self.boundary:%Y-%m-%d}"
