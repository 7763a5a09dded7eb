from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from contacts.outreach.views import unsubscribe
from crm.health import health
from crm.me import MeView
from crm.metrics import metrics
from workflows.admin import admin_urls as workflows_admin_urls


class FaviconRedirect(RedirectView):
    """The static file's URL is looked up per request: in production it is the hashed name
    from collectstatic's manifest, which does not exist before collectstatic has run."""

    def get_redirect_url(self, *args, **kwargs):
        return static("crm/favicon.svg")


urlpatterns = [
    # No public home page: "/" is the admin's home, and the favicon is a static file.
    path("", RedirectView.as_view(pattern_name="admin:index"), name="home"),
    path("favicon.ico", FaviconRedirect.as_view(), name="favicon"),
    path("admin/", include(workflows_admin_urls)),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/me/", MeView.as_view(), name="api-me"),
    path("api/", include("contacts.api.urls")),
    path("api/billing/", include("billing.api.urls")),
    path("api/", include("workflows.api.urls")),
    path("forms/", include("contacts.intake.urls")),
    # HubSpot's CRM v3 contacts API, for its official clients (docs/HUBSPOT.md).
    path("crm/v3/", include("contacts.hubspot.urls")),
    path("unsubscribe/<str:token>/", unsubscribe, name="unsubscribe"),
    # Operations: a probe for load balancers (no authentication) and Prometheus's scrape.
    path("health/", health, name="health"),
    path("metrics", metrics, name="metrics"),
]

handler404 = "crm.views.page_not_found"
handler500 = "crm.views.server_error"
