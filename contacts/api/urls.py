from django.urls import include, path
from rest_framework.routers import SimpleRouter

from contacts.api.views import ContactViewSet, SourceViewSet
from contacts.merge.api import ContactMergeView

# SimpleRouter: no browsable API root (it would need model permissions of its own).
router = SimpleRouter()
router.register("contacts", ContactViewSet, basename="contact")
router.register("sources", SourceViewSet, basename="source")

urlpatterns = [
    # Before the contacts router: "export" is not a contact id.
    path("", include("contacts.imports.api.urls")),
    path("contacts/merge/", ContactMergeView.as_view(), name="contact-merge"),
    *router.urls,
    path("", include("contacts.outreach.api.urls")),
    path("", include("contacts.intake.api.urls")),
]
