from django.urls import path

from billing.api.views import BillingUsageView

urlpatterns = [
    path("usage/", BillingUsageView.as_view(), name="billing-usage"),
]
