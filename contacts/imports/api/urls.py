from django.urls import path
from rest_framework.routers import SimpleRouter

from contacts.imports.api.views import ContactExportView, ContactImportViewSet

router = SimpleRouter()
router.register("imports", ContactImportViewSet, basename="contactimport")

urlpatterns = [
    path("contacts/export/", ContactExportView.as_view(), name="contact-export"),
    *router.urls,
]
