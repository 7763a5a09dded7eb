# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---

from django.core.exceptions import ValidationError as DjangoValidationError  # noqa: E402
from rest_framework import serializers  # noqa: E402

from workflows.criteria import CriteriaError, criteria_validate  # noqa: E402
from workflows.models import Workflow, WorkflowRun, actions_clean  # noqa: E402


class WorkflowSerializer(serializers.ModelSerializer):
    criteria = serializers.JSONField(
        help_text='HubSpot\'s filterGroups, e.g. {"filterGroups": [{"filters": '
        '[{"propertyName": "lifecycle_stage", "operator": "EQ", "value": "mql"}]}]}.'
    )
    actions = serializers.JSONField(
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

    def validate_criteria(self, value):
        try:
            criteria_validate(value)
        except CriteriaError as exc:
            raise serializers.ValidationError(exc.as_list()) from exc
        return value

    def validate_actions(self, value):
        try:
            return actions_clean(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from exc


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


class WorkflowRunRequestSerializer(serializers.Serializer):
    idempotency_key = serializers.CharField(max_length=150, required=False, allow_blank=True)


# --- engagement scoring (issue 5, item 7) ---


# --- hygiene, rotation, savings (issue 5, items 8-10) ---
