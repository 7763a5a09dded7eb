"""The subscription and the billing calendar through the API: read by staff who may view
them, changed by those who may change them (Billing admin), as in the admin."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.api.serializers import CalendarSerializer, SubscriptionSerializer
from billing.models import Subscription
from billing.subscription import calendar_update, subscription_update
from crm.models import Account


class SingletonView(APIView):
    """GET, PUT and PATCH of a one-row model; StrictModelPermissions reads its queryset."""

    serializer_class: type

    def load(self):
        raise NotImplementedError

    def save(self, changes: dict):
        """Apply the changes through the service (the model's rules; ValidationError)."""
        raise NotImplementedError

    def get(self, request):
        return Response(self.serializer_class(self.load()).data)

    def _change(self, request, *, partial: bool):
        serializer = self.serializer_class(self.load(), data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        try:
            saved = self.save(serializer.validated_data)
        except DjangoValidationError as error:
            # The model's rules, as the admin shows them beside each field.
            raise ValidationError(error.message_dict) from error
        return Response(self.serializer_class(saved).data)

    def put(self, request):
        return self._change(request, partial=False)

    def patch(self, request):
        return self._change(request, partial=True)


SUBSCRIPTION_DOC = (
    "Money is in integer minor units of `currency` (cents for USD), as everywhere in the API. "
    "The alert settings are read-only here. Changing needs billing.change_subscription."
)


class SubscriptionView(SingletonView):
    queryset = Subscription.objects.all()
    serializer_class = SubscriptionSerializer

    def load(self):
        return Subscription.load()

    def save(self, changes: dict):
        return subscription_update(**changes)

    @extend_schema(summary="The subscription: tier and prices", responses=SubscriptionSerializer)
    def get(self, request):
        return super().get(request)

    @extend_schema(
        summary="Replace the tier and prices",
        description=SUBSCRIPTION_DOC,
        request=SubscriptionSerializer,
        responses=SubscriptionSerializer,
    )
    def put(self, request):
        return super().put(request)

    @extend_schema(
        summary="Change the tier or prices",
        description=SUBSCRIPTION_DOC,
        request=SubscriptionSerializer,
        responses=SubscriptionSerializer,
    )
    def patch(self, request):
        return super().patch(request)


CALENDAR_DOC = (
    "A period runs from one update date to the next, from local midnight in the time zone. "
    "The current period's bounds follow a change at once: change the calendar between "
    "periods. Changing needs crm.change_account."
)


class CalendarView(SingletonView):
    queryset = Account.objects.all()
    serializer_class = CalendarSerializer

    def load(self):
        return Account.load()

    def save(self, changes: dict):
        return calendar_update(**changes)

    @extend_schema(
        summary="The billing calendar and the current period", responses=CalendarSerializer
    )
    def get(self, request):
        return super().get(request)

    @extend_schema(
        summary="Replace the billing calendar",
        description=CALENDAR_DOC,
        request=CalendarSerializer,
        responses=CalendarSerializer,
    )
    def put(self, request):
        return super().put(request)

    @extend_schema(
        summary="Change the billing calendar",
        description=CALENDAR_DOC,
        request=CalendarSerializer,
        responses=CalendarSerializer,
    )
    def patch(self, request):
        return super().patch(request)
