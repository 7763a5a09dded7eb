"""Thin Celery tasks of the workflows app: ids in, a service call."""


# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---

from celery import shared_task  # noqa: E402


@shared_task(name="workflows.run_workflow", acks_late=True, max_retries=3)
def run_workflow(run_id: int) -> dict:
    """Run (or resume) a workflow run; returns at once when it is done, held or rejected."""
    from workflows.models import WorkflowRun
    from workflows.services import workflow_run_execute

    run = WorkflowRun.objects.filter(pk=run_id).first()
    if run is None:
        return {"run": run_id, "skipped": True}
    run = workflow_run_execute(run=run)
    return {"run": run.pk, "status": run.status}


@shared_task(name="workflows.dispatch_due", acks_late=True, max_retries=3)
def dispatch_due_workflows() -> dict:
    """The beat's dispatcher: queue a run of every scheduled workflow that is due."""
    from workflows.services import workflows_dispatch_due

    return {"queued": workflows_dispatch_due()}


@shared_task(name="workflows.contacts_changed", acks_late=True, max_retries=3)
def evaluate_changed_contacts(contact_ids: list[int]) -> dict:
    """Event triggers: evaluate only these contacts against the event-triggered workflows."""
    from workflows.services import workflows_on_contacts_changed

    return {"runs": workflows_on_contacts_changed(contact_ids=contact_ids)}


def on_contacts_changed(ids: list[int]) -> None:
    """contacts.hooks contact listener (registered in WorkflowsConfig.ready): after commit."""
    from workflows.models import Workflow

    # One indexless query over a handful of workflows; nothing is queued when none listens.
    if Workflow.objects.filter(enabled=True, event_triggered=True).exists():
        evaluate_changed_contacts.delay(list(ids))


# --- engagement scoring (issue 5, item 7) ---


# --- hygiene, rotation, savings (issue 5, items 8-10) ---
