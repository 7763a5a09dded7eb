from rest_framework.routers import SimpleRouter

from contacts.api.views import ContactImportViewSet, ContactViewSet, SourceViewSet

# SimpleRouter: no browsable API root (it would need model permissions of its own).
router = SimpleRouter()
router.register("contacts", ContactViewSet, basename="contact")
router.register("sources", SourceViewSet, basename="source")
# --- imports ---
router.register("imports", ContactImportViewSet, basename="contactimport")

urlpatterns = router.urls
