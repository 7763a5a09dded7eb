# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---


# --- engagement scoring (issue 5, item 7) ---


# --- hygiene, rotation, savings (issue 5, items 8-10) ---

from dataclasses import asdict  # noqa: E402

from django.utils import timezone  # noqa: E402
from drf_spectacular.utils import OpenApiParameter, extend_schema  # noqa: E402
from rest_framework.response import Response  # noqa: E402
from rest_framework.views import APIView  # noqa: E402

from billing.selectors import billing_demotion_saving  # noqa: E402
from crm.api import requires  # noqa: E402
from workflows.api.serializers import SavingsQuerySerializer, SavingsReportSerializer  # noqa: E402
from workflows.selectors import savings_report  # noqa: E402


class SavingsReportView(APIView):
    """Marketing contacts that cannot be marketed to or are unengaged, and the saving."""

    permission_classes = [requires("workflows.view_savings")]

    @extend_schema(
        summary="Savings report",
        description="Marketing contacts without a pending change that are unsubscribed, hard "
        "bounced or unengaged (no engagement in `unengaged_days` days, created before that), "
        "per reason, and what setting them non-marketing now saves on a month's invoice from "
        "the next update date (minor units).",
        parameters=[OpenApiParameter("unengaged_days", int, description="1–3650, default 90.")],
        responses=SavingsReportSerializer,
    )
    def get(self, request):
        query = SavingsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        report = savings_report(
            now=timezone.now(),
            unengaged_days=query.validated_data["unengaged_days"],
            price=billing_demotion_saving,
        )
        return Response(SavingsReportSerializer(asdict(report)).data)
