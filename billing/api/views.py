"""The billing API: reads over billing.selectors, and the cost preview."""

from django.db.models.functions import Now
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.api.serializers import (
    BillingPeriodSerializer,
    BillingUsageSerializer,
    CostPreviewRequestSerializer,
    CostPreviewSerializer,
    InvoiceSerializer,
)
from billing.guardrails import billing_cost_preview
from billing.selectors import billing_invoices, billing_periods, billing_usage
from contacts.filters import ContactFilter
from contacts.selectors import contact_list
from contacts.status.results import SET_MARKETING
from contacts.status.rules import MARKETING_STATUS_PERMISSION
from contacts.status.selectors import usage_current
from contacts.status.services import contacts_status_preview
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
        "pending downgrades and overage blocks, the estimate and the forecast. O(1): read "
        "from the period counters.",
        responses=BillingUsageSerializer,
    )
    def get(self, request):
        return Response(BillingUsageSerializer(billing_usage()).data)


class BillingPeriodViewSet(viewsets.ReadOnlyModelViewSet):
    """Closed (or held) billing periods, newest first."""

    serializer_class = BillingPeriodSerializer

    def get_queryset(self):
        return billing_periods()


class InvoiceViewSet(viewsets.ReadOnlyModelViewSet):
    """Invoices with their lines, newest first. Read-only: a final invoice never changes."""

    serializer_class = InvoiceSerializer
    lookup_field = "number"

    def get_queryset(self):
        return billing_invoices()


class CostPreviewView(APIView):
    permission_classes = [
        requires(
            "billing.view_subscription",
            MARKETING_STATUS_PERMISSION,
            any_of=True,
            message=f"The cost preview needs billing.view_subscription or {MARKETING_STATUS_PERMISSION}.",
        )
    ]

    @extend_schema(
        summary="What making contacts marketing now would cost",
        description="Give would_add (a number), or ids / filter (the contacts that would be set "
        "marketing: those already marketing add nothing). Returns the new peak, blocks and the "
        "change to this period's invoice. Writes nothing.",
        request=CostPreviewRequestSerializer,
        responses=CostPreviewSerializer,
    )
    def post(self, request):
        serializer = CostPreviewRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "would_add" in data:
            usage = usage_current()
            cost = billing_cost_preview(
                live_count=usage.live_count,
                peak_count=usage.peak_count,
                would_add=data["would_add"],
            )
        else:
            target = (
                data["ids"]
                if "ids" in data
                else ContactFilter(data=data["filter"], queryset=contact_list(), now=Now()).qs
            )
            cost = contacts_status_preview(contacts=target, operation=SET_MARKETING).extra["cost"]
        return Response(CostPreviewSerializer(cost).data)
