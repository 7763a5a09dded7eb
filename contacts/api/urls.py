from django.urls import path
from rest_framework.routers import SimpleRouter

from contacts.api.views import (
    ContactViewSet,
    SourceViewSet,
)
from contacts.imports.api.views import (
    ContactExportView,
    ContactImportViewSet,
)
from contacts.intake.api.views import (
    AdLeadsView,
    ChatflowIntakeView,
    ExternalFormIntakeView,
    FormIntakeView,
    IntegrationContactsView,
)
from contacts.outreach.api.views import (
    AdAudienceViewSet,
    CommunicationViewSet,
    ContactListViewSet,
    MarketingEmailViewSet,
)

# SimpleRouter: no browsable API root (it would need model permissions of its own).
router = SimpleRouter()
router.register("contacts", ContactViewSet, basename="contact")
router.register("sources", SourceViewSet, basename="source")
router.register("imports", ContactImportViewSet, basename="contactimport")
router.register("marketing-emails", MarketingEmailViewSet, basename="marketingemail")
router.register("ad-audiences", AdAudienceViewSet, basename="adaudience")
router.register("contact-lists", ContactListViewSet, basename="contactlist")
router.register("communications", CommunicationViewSet, basename="communication")

urlpatterns = [
    # Before the router: "export" is not a contact id.
    path("contacts/export/", ContactExportView.as_view(), name="contact-export"),
    *router.urls,
    # Public intake (throttled) and app/ad-account token intake.
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
