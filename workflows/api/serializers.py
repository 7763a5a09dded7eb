# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---


# --- engagement scoring (issue 5, item 7) ---

from rest_framework import serializers  # noqa: E402

from contacts.models import EngagementType  # noqa: E402
from contacts.services import ENGAGEMENT_BATCH_MAX  # noqa: E402
from workflows.models import ScoringRule  # noqa: E402


class EngagementEventInputSerializer(serializers.Serializer):
    """One event (documentation: the service checks each item and reports per item)."""

    contact_id = serializers.IntegerField(required=False, help_text="The contact's id…")
    email = serializers.EmailField(required=False, help_text="…or email (both: the same one).")
    type = serializers.ChoiceField(choices=EngagementType.choices)
    occurred_at = serializers.DateTimeField(
        help_text="ISO 8601; without an offset, UTC. At most an hour ahead of the server."
    )
    external_id = serializers.CharField(
        max_length=200, help_text="The sender's id of the event: a retry is a duplicate."
    )
    properties = serializers.DictField(required=False, help_text="Anything else (an object).")


class EngagementBatchSerializer(serializers.Serializer):
    events = EngagementEventInputSerializer(
        many=True, help_text=f"1 to {ENGAGEMENT_BATCH_MAX:,} events."
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


class ScoringRuleSerializer(serializers.ModelSerializer):
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


# --- hygiene, rotation, savings (issue 5, items 8-10) ---

from rest_framework import serializers  # noqa: E402

from workflows.models import DEFAULT_UNENGAGED_DAYS, MAX_UNENGAGED_DAYS  # noqa: E402


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
