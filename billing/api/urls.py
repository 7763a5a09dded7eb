from django.urls import path
from rest_framework.routers import SimpleRouter

from billing.api.close_views import CloseView
from billing.api.settings_views import CalendarView, SubscriptionView
from billing.api.views import (
    BillingPeriodViewSet,
    BillingUsageView,
    CostPreviewView,
    InvoiceViewSet,
)

router = SimpleRouter()
router.register("periods", BillingPeriodViewSet, basename="billing-period")
router.register("invoices", InvoiceViewSet, basename="billing-invoice")

urlpatterns = [
    path("usage/", BillingUsageView.as_view(), name="billing-usage"),
    path("preview/", CostPreviewView.as_view(), name="billing-preview"),
    path("subscription/", SubscriptionView.as_view(), name="billing-subscription"),
    path("calendar/", CalendarView.as_view(), name="billing-calendar"),
    path("close/", CloseView.as_view(), name="billing-close"),
    *router.urls,
]
