from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied

from contacts.criteria import CriteriaError, criteria_validate
from contacts.engagement.models import EngagementType
from contacts.engagement.services import ENGAGEMENT_BATCH_MAX
from crm.api import StrictModelSerializer, StrictSerializer
from crm.inputs import JSONInputField
from workflows.models import (
    DEFAULT_UNENGAGED_DAYS,
    MAX_UNENGAGED_DAYS,
    ScoringRule,
    Workflow,
    WorkflowRun,
    actions_clean,
    status_actions_refusal,
)


@extend_schema_field({"type": "object"})
class CriteriaField(JSONInputField):
    """A criteria tree: an object (checked by contacts.criteria on validation)."""


@extend_schema_field({"type": "array", "items": {"type": "object"}})
class ActionsField(JSONInputField):
    """A workflow's actions: a list of objects (checked by workflows.models.actions_clean)."""


class WorkflowSerializer(StrictModelSerializer):
    criteria = CriteriaField(
        help_text='HubSpot\'s filterGroups, e.g. {"filterGroups": [{"filters": '
        '[{"propertyName": "lifecycle_stage", "operator": "EQ", "value": "mql"}]}]}.'
    )
    actions = ActionsField(
        required=False,
        help_text='Ordered list: {"type": "set_marketing"}, {"type": "set_non_marketing"}, '
        '{"type": "send_marketing_email", "email": <id>}, {"type": "add_to_ad_audience", '
        '"audience": <id>}, {"type": "remove_from_ad_audience", "audience": <id>}, '
        '{"type": "set_property", "field": "lifecycle_stage"|"lead_status", "value": "…"}.',
    )

    class Meta:
        model = Workflow
        fields = [
            "id",
            "name",
            "description",
            "enabled",
            "purpose",
            "criteria",
            "actions",
            "re_enrollment",
            "schedule_minutes",
            "event_triggered",
            "max_new_marketing",
            "last_run_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["last_run_at", "created_at", "updated_at"]
        extra_kwargs = {"schedule_minutes": {"min_value": 1}}  # null: not scheduled

    def validate_criteria(self, value):
        try:
            criteria_validate(value)
        except CriteriaError as exc:
            raise serializers.ValidationError(exc.as_list()) from exc
        return value

    def validate_actions(self, value):
        try:
            actions = actions_clean(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from exc
        request = self.context.get("request")
        refusal = status_actions_refusal(getattr(request, "user", None), actions)
        if refusal:
            raise PermissionDenied(refusal)
        return actions


class WorkflowRunSerializer(serializers.ModelSerializer):
    duration_seconds = serializers.SerializerMethodField()

    class Meta:
        model = WorkflowRun
        fields = [
            "id",
            "workflow",
            "trigger",
            "status",
            "matched",
            "enrolled",
            "changed",
            "refused",
            "would_become_marketing",
            "results",
            "hold_reason",
            "error",
            "created_at",
            "started_at",
            "finished_at",
            "duration_seconds",
            "idempotency_key",
        ]
        read_only_fields = fields

    def get_duration_seconds(self, run) -> float | None:
        return run.duration.total_seconds() if run.duration else None


class WorkflowRunRequestSerializer(StrictSerializer):
    idempotency_key = serializers.CharField(max_length=150, required=False, allow_blank=True)


ENGAGEMENT_EVENT_HELP = (
    "One event, an object: `type` (one of "
    + ", ".join(EngagementType.values)
    + "), `occurred_at` (ISO 8601; without an offset, UTC; at most an hour ahead of the "
    "server), `external_id` (the sender's id of the event, at most 200 characters: a retry is "
    "a duplicate), the contact's `contact_id` or `email` (both: the same contact) and "
    "optionally `properties` (an object). Each item is checked on its own: a bad one is "
    "reported in `items` with its messages and the others are stored."
)


class EngagementBatchSerializer(serializers.Serializer):
    """The batch's shape only: each event is checked by the service (row-level report)."""

    events = serializers.ListField(
        child=serializers.JSONField(help_text=ENGAGEMENT_EVENT_HELP),
        min_length=1,
        max_length=ENGAGEMENT_BATCH_MAX,
        help_text=f"1 to {ENGAGEMENT_BATCH_MAX:,} events.",
    )


class EngagementItemResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["created", "duplicate", "error"])
    contact_id = serializers.IntegerField(allow_null=True)
    external_id = serializers.CharField(allow_null=True)
    messages = serializers.ListField(child=serializers.CharField())


class EngagementBatchResultSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    errors = serializers.IntegerField()
    scored_contacts = serializers.IntegerField(help_text="Contacts whose lead score changed.")
    items = EngagementItemResultSerializer(many=True)


class ScoringRuleSerializer(StrictModelSerializer):
    class Meta:
        model = ScoringRule
        fields = [
            "id",
            "name",
            "event_type",
            "points",
            "window_days",
            "half_life_days",
            "enabled",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]

    def validate(self, attrs):
        window = attrs.get("window_days", getattr(self.instance, "window_days", None))
        half_life = attrs.get("half_life_days", getattr(self.instance, "half_life_days", None))
        if window and half_life:
            raise serializers.ValidationError(
                {"half_life_days": ["Choose a window or a half-life, not both."]}
            )
        return attrs


class ScoreRecomputeResultSerializer(serializers.Serializer):
    rules = serializers.IntegerField(help_text="Enabled rules; 0: scoring is off.")
    chunks = serializers.IntegerField()
    changed = serializers.IntegerField()
    dry_run = serializers.BooleanField()
    seconds = serializers.FloatField()


class SavingsQuerySerializer(serializers.Serializer):
    unengaged_days = serializers.IntegerField(
        min_value=1, max_value=MAX_UNENGAGED_DAYS, default=DEFAULT_UNENGAGED_DAYS
    )


class SavingsReasonSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Settled marketing contacts with this reason.")
    once = serializers.IntegerField(
        help_text="Counted once, in the order unsubscribed, hard_bounced, unengaged."
    )
    saving = serializers.IntegerField(
        allow_null=True, help_text="A month's invoice saving from the next period, minor units."
    )


class SavingsReasonsSerializer(serializers.Serializer):
    unsubscribed = SavingsReasonSerializer()
    hard_bounced = SavingsReasonSerializer()
    unengaged = SavingsReasonSerializer()


class SavingsReportSerializer(serializers.Serializer):
    at = serializers.DateTimeField()
    unengaged_days = serializers.IntegerField()
    next_update_date = serializers.DateTimeField()
    currency = serializers.CharField()
    reasons = SavingsReasonsSerializer()
    total = serializers.IntegerField(help_text="Distinct contacts with any reason.")
    saving = serializers.IntegerField(allow_null=True, help_text="Demoting all of them.")
    already_pending = serializers.IntegerField(
        help_text="Marketing contacts already non-marketing from the next update date."
    )
