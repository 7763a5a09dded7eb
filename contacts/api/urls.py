from django.urls import path
from rest_framework.routers import SimpleRouter

from contacts.api.views import (
    AdAudienceViewSet,
    CommunicationViewSet,
    ContactExportView,
    ContactListViewSet,
    ContactViewSet,
    MarketingEmailViewSet,
    SourceViewSet,
)

# SimpleRouter: no browsable API root (it would need model permissions of its own).
router = SimpleRouter()
router.register("contacts", ContactViewSet, basename="contact")
router.register("sources", SourceViewSet, basename="source")
# --- communications ---
router.register("marketing-emails", MarketingEmailViewSet, basename="marketingemail")
router.register("ad-audiences", AdAudienceViewSet, basename="adaudience")
router.register("contact-lists", ContactListViewSet, basename="contactlist")
router.register("communications", CommunicationViewSet, basename="communication")

urlpatterns = [
    path("contacts/export/", ContactExportView.as_view(), name="contact-export"),
    *router.urls,
]
