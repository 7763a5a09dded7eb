from rest_framework.routers import SimpleRouter

from contacts.api.views import ContactViewSet, SourceViewSet

# SimpleRouter: no browsable API root (it would need model permissions of its own).
router = SimpleRouter()
router.register("contacts", ContactViewSet, basename="contact")
router.register("sources", SourceViewSet, basename="source")

urlpatterns = router.urls
