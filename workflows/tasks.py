"""Thin Celery tasks of the workflows app: ids in, a service call."""

from celery import shared_task


@shared_task(name="workflows.run_workflow", acks_late=True, max_retries=3)
def run_workflow(run_id: int) -> dict:
    """Run (or resume) a workflow run; returns at once when it is done, held or rejected."""
    from workflows.models import WorkflowRun
    from workflows.runs import workflow_run_execute

    run = WorkflowRun.objects.filter(pk=run_id).first()
    if run is None:
        return {"run": run_id, "skipped": True}
    run = workflow_run_execute(run=run)
    return {"run": run.pk, "status": run.status}


@shared_task(name="workflows.dispatch_due", acks_late=True, max_retries=3)
def dispatch_due_workflows() -> dict:
    """The beat's dispatcher: queue a run of every scheduled workflow that is due."""
    from workflows.runs import workflows_dispatch_due

    return {"queued": workflows_dispatch_due()}


@shared_task(name="workflows.contacts_changed", acks_late=True, max_retries=3)
def evaluate_changed_contacts(contact_ids: list[int]) -> dict:
    """Event triggers: evaluate only these contacts against the event-triggered workflows."""
    from workflows.runs import workflows_on_contacts_changed

    return {"runs": workflows_on_contacts_changed(contact_ids=contact_ids)}


def on_contacts_changed(ids: list[int]) -> None:
    """contacts.hooks contact listener (registered in WorkflowsConfig.ready): after commit."""
    from workflows.models import Workflow

    # One indexless query over a handful of workflows; nothing is queued when none listens.
    if Workflow.objects.filter(enabled=True, event_triggered=True).exists():
        evaluate_changed_contacts.delay(list(ids))


@shared_task(name="workflows.recompute_scores", acks_late=True, max_retries=3)
def recompute_scores(contacts_since: str | None = None, dry_run: bool = False) -> dict:
    """Rebuild every lead score from the events and the rules (daily, beat schedule).

    Idempotent: a rerun rewrites only the scores that differ. `contacts_since` (ISO 8601)
    limits it to contacts engaged since then; `dry_run` counts and writes nothing.
    """
    from django.utils.dateparse import parse_datetime

    from workflows.scoring import scores_recompute

    since = parse_datetime(contacts_since) if contacts_since else None
    return scores_recompute(contacts_since=since, dry_run=dry_run).as_dict()


@shared_task(name="workflows.run_hygiene_policies", acks_late=True, max_retries=3)
def run_hygiene_policies() -> list[dict]:
    """Hourly: run each enabled hygiene policy that is due (once per due slot; idempotent)."""
    from workflows.hygiene import hygiene_policies_run_due

    return [
        {"run": run.pk, "policy": run.policy_id, "scheduled": run.scheduled}
        for run in hygiene_policies_run_due()
    ]


@shared_task(name="workflows.run_rotation_plans", acks_late=True, max_retries=3)
def run_rotation_plans() -> list[dict]:
    """Hourly: each enabled rotation plan promotes once the current period's rollover has
    run (UsageState.rolled_over_through) and demotes within its lead time (idempotent)."""
    from workflows.rotation import rotation_plans_run

    return [
        {
            "plan": outcome.plan_id,
            "demoted": outcome.demote.demoted if outcome.demote else None,
            "promoted": outcome.promote.promoted if outcome.promote else None,
        }
        for outcome in rotation_plans_run()
    ]
