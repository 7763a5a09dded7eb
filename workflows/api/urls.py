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

# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---

router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("workflow-runs", WorkflowRunViewSet, basename="workflowrun")


# --- engagement scoring (issue 5, item 7) ---


router.register("scoring-rules", ScoringRuleViewSet, basename="scoringrule")
urlpatterns += [
    path("engagement-events/", EngagementEventsView.as_view(), name="engagement-events"),
]


# --- hygiene, rotation, savings (issue 5, items 8-10) ---

urlpatterns += [
    path("workflows/savings/", SavingsReportView.as_view(), name="workflows-savings"),
]


urlpatterns += router.urls
