"""Workflows, enrollments and runs; scoring rules; hygiene policies and rotation plans."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from jsonschema import Draft202012Validator

from contacts.criteria import CriteriaError, criteria_validate
from contacts.engagement.models import EngagementType
from contacts.models import (
    LeadStatus,
    LifecycleStage,
)
from contacts.status.rules import MARKETING_STATUS_PERMISSION
from crm.models import BaseModel, LeasedJob

# A workflow: criteria (contacts.criteria) and ordered actions over the contacts that
# NEWLY meet them. `Enrollment` (unique per workflow and contact) is what makes "newly":
# a contact is acted on once; with re-enrollment, again only after a run saw it stop
# matching (`exited_at`) and it then matches anew. Runs are recorded (`WorkflowRun`).
# The rules: workflows/services.py; the run algorithm: workflows/runs.py and
# docs/ARCHITECTURE.md.


DEFAULT_MAX_NEW_MARKETING = 10_000


class WorkflowPurpose(models.TextChoices):
    ENROLLMENT = "enrollment", "Enrollment: sets contacts marketing"
    EXCLUSION = "exclusion", "Exclusion: sets contacts non-marketing"
    OTHER = "other", "Other"


class ActionType(models.TextChoices):
    SET_MARKETING = "set_marketing", "Set as marketing contact"
    SET_NON_MARKETING = "set_non_marketing", "Set as non-marketing (from the next update date)"
    SEND_MARKETING_EMAIL = "send_marketing_email", "Send a marketing email"
    ADD_TO_AD_AUDIENCE = "add_to_ad_audience", "Add to an ad audience"
    REMOVE_FROM_AD_AUDIENCE = "remove_from_ad_audience", "Remove from an ad audience"
    SET_PROPERTY = "set_property", "Set lifecycle stage or lead status"


PROPERTY_FIELDS = ("lifecycle_stage", "lead_status")
MAX_ACTIONS = 20

# The shape of `Workflow.actions`: an ordered list, each item one action. `email` is a
# MarketingEmail id, `audience` an AdAudience id; `field`/`value` for set_property.
ACTIONS_JSON_SCHEMA: dict = {
    "type": "array",
    "title": "Actions (run in this order)",
    "maxItems": MAX_ACTIONS,
    "items": {
        "type": "object",
        "title": "Action",
        "properties": {
            "type": {
                "type": "string",
                "title": "Action",
                "choices": [{"value": v, "title": t} for v, t in ActionType.choices],
            },
            "email": {"type": ["integer", "null"], "title": "Marketing email id"},
            "audience": {"type": ["integer", "null"], "title": "Ad audience id"},
            "field": {
                "type": ["string", "null"],
                "title": "Property",
                # A blank choice, so a property picked by mistake can be taken back.
                "choices": [
                    {"value": "", "title": "(none)"},
                    *(
                        {"value": f, "title": f.replace("_", " ").capitalize()}
                        for f in PROPERTY_FIELDS
                    ),
                ],
            },
            "value": {"type": ["string", "null"], "title": "Property value"},
        },
        "required": ["type"],
        "additionalProperties": False,
    },
}
_ACTIONS_SHAPE = {  # the editor's "choices" is django-jsonform's; the validator wants enums
    **ACTIONS_JSON_SCHEMA,
    "items": {
        **ACTIONS_JSON_SCHEMA["items"],
        "properties": {
            **ACTIONS_JSON_SCHEMA["items"]["properties"],
            "type": {"enum": list(ActionType.values)},
            "field": {"enum": [*PROPERTY_FIELDS, None]},
        },
    },
}
_ACTIONS_VALIDATOR = Draft202012Validator(_ACTIONS_SHAPE)
_NEEDS = {
    ActionType.SEND_MARKETING_EMAIL: ("email",),
    ActionType.ADD_TO_AD_AUDIENCE: ("audience",),
    ActionType.REMOVE_FROM_AD_AUDIENCE: ("audience",),
    ActionType.SET_PROPERTY: ("field", "value"),
}
_NEEDS_KEYS = set(ActionType.values)
_PROPERTY_CHOICES = {
    "lifecycle_stage": set(LifecycleStage.values),
    "lead_status": {"", *LeadStatus.values},
}


def actions_from_editor(actions) -> list:
    """The admin editor's list with each action's unused inputs dropped.

    The editor shows every input for every action and posts the blank ones (`"field": ""`,
    `"email": null`), and keeps what was typed into an input before the action's type was
    changed; only the keys the chosen type takes are the user's intent.
    """
    if not isinstance(actions, list):
        return actions
    kept = []
    for action in actions:
        if not isinstance(action, dict) or action.get("type") not in _NEEDS_KEYS:
            kept.append(action)
            continue
        keys = ("type", *_NEEDS.get(action["type"], ()))
        kept.append({k: action[k] for k in keys if k in action and action[k] is not None})
    return kept


def actions_clean(actions) -> list[dict]:
    """Validate a list of actions; return it without empty keys. Raises ValidationError
    naming each bad action (1-based)."""
    errors = [
        f"Actions{''.join(f'[{p}]' for p in e.absolute_path)}: {e.message}"
        for e in _ACTIONS_VALIDATOR.iter_errors(actions)
    ]
    if errors:
        raise ValidationError(errors)
    cleaned, problems = [], []
    for n, action in enumerate(actions, start=1):
        action = {k: v for k, v in action.items() if v not in (None, "") or k == "value"}
        kind = action["type"]
        wanted = {"type", *_NEEDS.get(kind, ())}
        missing = [k for k in _NEEDS.get(kind, ()) if k not in action]
        extra = sorted(set(action) - wanted)
        if missing:
            problems.append(f"Action {n} ({kind}) needs {', '.join(missing)}.")
        if extra and kind != ActionType.SET_PROPERTY:
            problems.append(f"Action {n} ({kind}) does not take {', '.join(extra)}.")
        if kind == ActionType.SET_PROPERTY and not missing:
            allowed = _PROPERTY_CHOICES[action["field"]]
            if action["value"] not in allowed:
                problems.append(
                    f"Action {n}: {action['value']!r} is not a {action['field']} "
                    f"(one of {', '.join(sorted(v for v in allowed if v)) or 'empty'})."
                )
        cleaned.append({k: action[k] for k in ("type", *_NEEDS.get(kind, ())) if k in action})
    kinds = [a["type"] for a in cleaned]
    if ActionType.SET_MARKETING in kinds and ActionType.SET_NON_MARKETING in kinds:
        problems.append("A workflow cannot both set marketing and set non-marketing.")
    if problems:
        raise ValidationError(problems)
    return cleaned


def validate_actions(value) -> None:
    actions_clean(value)


def validate_criteria(value) -> None:
    try:
        criteria_validate(value)
    except CriteriaError as exc:
        raise exc.as_validation_error() from exc


def empty_criteria() -> dict:
    return {"filterGroups": []}


class Workflow(BaseModel):
    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    enabled = models.BooleanField(default=False)
    purpose = models.CharField(
        max_length=20,
        choices=WorkflowPurpose.choices,
        default=WorkflowPurpose.OTHER,
        help_text="Exclusion wins: an enrollment workflow never makes marketing a contact "
        "that an enabled exclusion workflow matches (it is counted as refused).",
    )
    criteria = models.JSONField(default=empty_criteria, validators=[validate_criteria])
    actions = models.JSONField(default=list, blank=True, validators=[validate_actions])
    re_enrollment = models.BooleanField(
        "re-enrollment",
        default=False,
        help_text="Act again on a contact that stopped matching and then matches anew. Off: a "
        "contact is acted on once, so a manual decision is not undone by the rule every night.",
    )
    schedule_minutes = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Run every N minutes (empty: not scheduled).",
    )
    event_triggered = models.BooleanField(
        default=False, help_text="Evaluate a contact as soon as it is created or updated."
    )
    max_new_marketing = models.PositiveIntegerField(
        default=DEFAULT_MAX_NEW_MARKETING,
        help_text="A run that would make more contacts marketing waits for approval.",
    )
    last_run_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        editable=False,
        related_name="+",
    )

    class Meta:
        ordering = ["name"]
        permissions = [
            ("run_workflow", "Can run and preview workflows"),
            ("approve_run", "Can approve workflow runs held past their limit"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(schedule_minutes__isnull=True)
                | models.Q(schedule_minutes__gt=0),
                name="workflow_schedule_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        super().clean()
        if not isinstance(self.actions, list):
            return
        try:
            self.actions = actions_clean(self.actions)
        except ValidationError as exc:
            raise ValidationError({"actions": exc.messages}) from exc
        from contacts.outreach.models import (
            AdAudience,
            MarketingEmail,
        )

        problems = []
        for n, action in enumerate(self.actions, start=1):
            if "email" in action and not MarketingEmail.objects.filter(pk=action["email"]).exists():
                problems.append(f"Action {n}: there is no marketing email #{action['email']}.")
            if (
                "audience" in action
                and not AdAudience.objects.filter(pk=action["audience"]).exists()
            ):
                problems.append(f"Action {n}: there is no ad audience #{action['audience']}.")
        if problems:
            raise ValidationError({"actions": problems})

    @property
    def action_types(self) -> list[str]:
        return [a.get("type") for a in self.actions or []]

    @property
    def changes_marketing_status(self) -> bool:
        return actions_change_marketing_status(self.actions)


STATUS_ACTION_TYPES = frozenset({ActionType.SET_MARKETING, ActionType.SET_NON_MARKETING})


def actions_change_marketing_status(actions) -> bool:
    return any(isinstance(a, dict) and a.get("type") in STATUS_ACTION_TYPES for a in actions or [])


def status_actions_refusal(user, actions) -> str | None:
    """Why `user` may not write or run these actions, or None. Actions that change marketing
    statuses need the status permission, as a change by hand does: without it, a workflow
    would be a way around the rule that only status managers make contacts marketing."""
    if user is None or not actions_change_marketing_status(actions):
        return None
    if user.has_perm(MARKETING_STATUS_PERMISSION):
        return None
    return (
        "Only users who may change marketing statuses may write or run a workflow that sets "
        "contacts as marketing or non-marketing; ask a marketing-ops manager, or remove those "
        "actions."
    )


class Enrollment(models.Model):
    """A contact enrolled in a workflow: acted on once (again only with re-enrollment)."""

    workflow = models.ForeignKey(
        Workflow,
        on_delete=models.CASCADE,
        related_name="enrollments",
        # enrollment_once (workflow, contact) leads with the workflow and serves every read
        # by workflow: a second index would be one more write per enrollment for nothing.
        db_index=False,
    )
    contact = models.ForeignKey(
        "contacts.Contact", on_delete=models.CASCADE, related_name="workflow_enrollments"
    )
    run = models.ForeignKey(
        "WorkflowRun",
        null=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The run that enrolled it last.",
        db_index=False,  # the (run, contact) index below serves "the contacts of a run"
        # No foreign-key constraint in the database: only a run's own chunks write its id
        # here, under the run's lease, and deleting a run sets it to NULL through Django
        # (SET_NULL). The constraint's check is one look-up and row lock of the run per
        # enrollment at commit (the same check of the workflow: about 1 s for 150,000).
        db_constraint=False,
    )
    enrolled_at = models.DateTimeField(help_text="First enrollment.")
    last_matched_at = models.DateTimeField(help_text="The latest time it newly met the criteria.")
    exited_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Re-enrollment workflows: when a run saw it stop matching (empty: matching).",
    )
    times = models.PositiveIntegerField(default=1, help_text="How many times it enrolled.")

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "contact"], name="enrollment_once"),
        ]
        indexes = [models.Index(fields=["run", "contact"], name="enrollment_run_idx")]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.workflow_id}"


class RunTrigger(models.TextChoices):
    MANUAL = "manual", "Manual (admin)"
    SCHEDULE = "schedule", "Schedule"
    EVENT = "event", "Contact created or updated"
    API = "api", "API"
    COMMAND = "command", "Command"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    HELD = "held", "Held for approval"
    REJECTED = "rejected", "Rejected"
    FAILED = "failed", "Failed"


class WorkflowRun(LeasedJob):
    """One run of a workflow. Only the system writes it (the admin shows it read-only).

    A worker runs it under a lease (crm.jobs): one that dies leaves it failed, and a resume
    goes on from `cursor` (and sends first the email of chunks before `emailed_through`).
    A run shared by the workers keeps its progress in its `chunks` (WorkflowRunChunk)
    instead, and leaves both cursors at 0.
    """

    LEASE_RUNNING = RunStatus.RUNNING
    LEASE_FAILED = RunStatus.FAILED
    LEASE_MESSAGE_FIELD = "error"
    LEASE_NOUN = "workflow run"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="runs")
    trigger = models.CharField(max_length=20, choices=RunTrigger.choices)
    status = models.CharField(max_length=20, choices=RunStatus.choices, default=RunStatus.QUEUED)
    contact_ids = models.JSONField(
        null=True, blank=True, help_text="Event runs: only these contacts are evaluated."
    )
    matched = models.PositiveIntegerField(default=0)
    enrolled = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(
        default=0, help_text="Status changes made (became marketing, or scheduled non-marketing)."
    )
    refused = models.PositiveIntegerField(
        default=0,
        help_text="Matched by an enabled exclusion workflow (exclusion wins), or refused by the "
        "send guard (non-marketing, unsubscribed, bounced).",
    )
    would_become_marketing = models.PositiveIntegerField(default=0)
    results = models.JSONField(default=dict, blank=True, help_text="Per action counts.")
    cursor = models.BigIntegerField(
        default=0, help_text="Contacts with ids below this are done (a rerun resumes here)."
    )
    emailed_through = models.BigIntegerField(
        default=0,
        help_text="Contacts with ids below this have had the run's marketing email (sent after "
        "each chunk's commit; a resumed run first sends what a killed one had not).",
    )
    hold_reason = models.TextField(blank=True)
    held_by_limit = models.BooleanField(default=False)
    held_by_billing = models.BooleanField(default=False)
    limit_approved = models.BooleanField(default=False)
    billing_approved = models.BooleanField(default=False)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    as_of = models.DateTimeField(
        null=True, blank=True, help_text="The instant the criteria are evaluated at."
    )

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["workflow", "-id"], name="workflowrun_workflow_idx"),
            # The minute's check for runs whose worker died reads only the running ones.
            models.Index(
                fields=["lease_expires_at"],
                condition=models.Q(status="running"),
                name="workflowrun_running_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"Run #{self.pk} of {self.workflow_id} ({self.status})"

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


class WorkflowRunChunk(models.Model):
    """One range of contact ids of a run shared by the workers (workflows/runs.py): any worker
    may take it, and it is done once. `done_at` is written in the chunk's own transaction,
    with its work and its counts; `emailed_at` once its marketing email has gone (after that
    commit), or with `done_at` when the run sends none. The run is done when every chunk is
    emailed."""

    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="chunks")
    lo = models.BigIntegerField(help_text="The first contact id of the range.")
    hi = models.BigIntegerField(help_text="The contact id past the range's last.")
    done_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "lo"]
        constraints = [
            models.UniqueConstraint(fields=["run", "lo"], name="workflowrunchunk_once"),
        ]

    def __str__(self) -> str:
        return f"Run #{self.run_id}, contacts {self.lo}–{self.hi - 1}"


# A contact's lead score is the sum, over its engagement events, of the points of the
# enabled rules for the event's type (workflows.scoring: `scores_apply_events` adds the
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


# Unengaged = no engagement in N days; N is 1..3650 (ten years), the criteria's day limit.
MAX_UNENGAGED_DAYS = 3_650
DEFAULT_UNENGAGED_DAYS = 90
# A rotation plan keeps at most this many contacts marketing (its ids travel as lists).
MAX_ROTATION_SIZE = 100_000


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


class HygieneTrigger(models.TextChoices):
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
    trigger = models.CharField(max_length=16, choices=HygieneTrigger.choices)
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
