from django.urls import path  # noqa: F401
from rest_framework.routers import SimpleRouter

from workflows.api.views import (
    EngagementEventsView,
    SavingsReportView,
    ScoringRuleViewSet,
    WorkflowRunViewSet,
    WorkflowViewSet,
)

router = SimpleRouter()
urlpatterns: list = []


router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("workflow-runs", WorkflowRunViewSet, basename="workflowrun")


router.register("scoring-rules", ScoringRuleViewSet, basename="scoringrule")
urlpatterns += [
    path("engagement-events/", EngagementEventsView.as_view(), name="engagement-events"),
]


urlpatterns += [
    path("workflows/savings/", SavingsReportView.as_view(), name="workflows-savings"),
]


urlpatterns += router.urls
