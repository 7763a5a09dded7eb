"""The home page's workflows panel: runs in progress and runs held for a decision."""

from __future__ import annotations

from django import template
from django.urls import reverse

from workflows.models import RunStatus, WorkflowRun

register = template.Library()

SHOWN_RUNS = 5


@register.inclusion_tag("admin/workflows/home_panel.html", takes_context=True)
def workflows_home_panel(context) -> dict:
    user = context["request"].user
    if not user.has_perm("workflows.view_workflowrun"):
        return {}
    runs = list(
        WorkflowRun.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.HELD])
        .select_related("workflow")
        .order_by("-id")[:SHOWN_RUNS]
    )
    return {
        "shown": True,
        "runs": [
            {
                "name": run.workflow.name,
                "status": run.get_status_display(),
                "held": run.status == RunStatus.HELD,
                "url": reverse("admin:workflows_workflowrun_change", args=[run.pk]),
            }
            for run in runs
        ],
        "runs_url": reverse("admin:workflows_workflowrun_changelist"),
    }
