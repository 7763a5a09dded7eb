"""Intake endpoints: public and throttled (forms, external forms, chatflows), or with the
connected app's or ad account's own token."""

from django.urls import path

from contacts.intake.api.views import (
    AdLeadsView,
    ChatflowIntakeView,
    ExternalFormIntakeView,
    FormIntakeView,
    IntegrationContactsView,
)

urlpatterns = [
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
