# Workflows (criteria, enrollments, runs, scoring, hygiene, rotation) arrive with their own issue.


# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---


# --- engagement scoring (issue 5, item 7) ---
#
# A contact's lead score is the sum, over its engagement events, of the points of the
# enabled rules for the event's type (workflows.services: `scores_apply_events` adds the
# new events' points on ingestion, `scores_recompute` rebuilds every score from the events).

from django.core.validators import MaxValueValidator, MinValueValidator  # noqa: E402
from django.db import models  # noqa: E402

from contacts.models import EngagementType  # noqa: E402
from crm.models import BaseModel  # noqa: E402

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
