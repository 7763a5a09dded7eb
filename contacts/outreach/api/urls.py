from rest_framework.routers import SimpleRouter

from contacts.outreach.api.views import (
    AdAudienceViewSet,
    CommunicationViewSet,
    ContactListViewSet,
    MarketingEmailViewSet,
)

router = SimpleRouter()
router.register("marketing-emails", MarketingEmailViewSet, basename="marketingemail")
router.register("ad-audiences", AdAudienceViewSet, basename="adaudience")
router.register("contact-lists", ContactListViewSet, basename="contactlist")
router.register("communications", CommunicationViewSet, basename="communication")

urlpatterns = router.urls
