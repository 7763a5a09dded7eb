from django.urls import path  # noqa: F401
from rest_framework.routers import SimpleRouter

router = SimpleRouter()
urlpatterns: list = []

# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---
from workflows.api.views import WorkflowRunViewSet, WorkflowViewSet  # noqa: E402

router.register("workflows", WorkflowViewSet, basename="workflow")
router.register("workflow-runs", WorkflowRunViewSet, basename="workflowrun")


# --- engagement scoring (issue 5, item 7) ---


# --- hygiene, rotation, savings (issue 5, items 8-10) ---


urlpatterns += router.urls
