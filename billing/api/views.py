"""The billing API: reads over billing.selectors."""

from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.api.serializers import BillingUsageSerializer
from billing.selectors import billing_usage
from crm.api import requires

CanViewUsage = requires(
    "billing.view_subscription",
    "contacts.view_periodusage",
    any_of=True,
    message="Billing usage needs billing.view_subscription or contacts.view_periodusage.",
)


class BillingUsageView(APIView):
    permission_classes = [CanViewUsage]

    @extend_schema(
        summary="This billing period's usage",
        description="Live billable count, the period's peak, the tier, the next update date, "
        "pending downgrades and overage blocks. O(1): read from the period counters.",
        responses=BillingUsageSerializer,
    )
    def get(self, request):
        return Response(BillingUsageSerializer(billing_usage()).data)
