# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---


# --- engagement scoring (issue 5, item 7) ---


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
