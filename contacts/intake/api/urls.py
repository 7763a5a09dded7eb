"""Intake endpoints: public and throttled (forms, external forms, chatflows), or with the
connected app's or ad account's own token; and the channels' management by staff."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from contacts.intake.api.channel_views import (
    AdAccountViewSet,
    ChatflowViewSet,
    ConnectedAppViewSet,
    FormViewSet,
)
from contacts.intake.api.views import (
    AdLeadsView,
    ChatflowIntakeView,
    ExternalFormIntakeView,
    FormIntakeView,
    IntegrationContactsView,
)

# Managing the channels (staff, model permissions).
router = SimpleRouter()
router.register("forms", FormViewSet, basename="form")
router.register("chatflows", ChatflowViewSet, basename="chatflow")
router.register("connected-apps", ConnectedAppViewSet, basename="connectedapp")
router.register("ad-accounts", AdAccountViewSet, basename="adaccount")

urlpatterns = [
    *router.urls,
    path("intake/forms/<slug:slug>/", FormIntakeView.as_view(), name="intake-form"),
    path("intake/external-forms/", ExternalFormIntakeView.as_view(), name="intake-external-form"),
    path("intake/chatflows/<int:pk>/", ChatflowIntakeView.as_view(), name="intake-chatflow"),
    path(
        "intake/integrations/<int:pk>/contacts/",
        IntegrationContactsView.as_view(),
        name="intake-integration-contacts",
    ),
    path("intake/ads/<int:pk>/leads/", AdLeadsView.as_view(), name="intake-ad-leads"),
]
