from rest_framework.routers import SimpleRouter

from contacts.api.views import ContactImportViewSet, ContactViewSet, SourceViewSet

# SimpleRouter: no browsable API root (it would need model permissions of its own).
router = SimpleRouter()
router.register("contacts", ContactViewSet, basename="contact")
router.register("sources", SourceViewSet, basename="source")
# --- imports ---
router.register("imports", ContactImportViewSet, basename="contactimport")

urlpatterns = router.urls

# --- intake ---
from django.urls import path  # noqa: E402

from contacts.api.intake_views import (  # noqa: E402
    AdLeadsView,
    ChatflowIntakeView,
    ExternalFormIntakeView,
    FormIntakeView,
    IntegrationContactsView,
)

urlpatterns += [
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
