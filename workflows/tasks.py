"""Thin Celery tasks of the workflows app: ids in, a service call."""

import time

from celery import shared_task
from django.db import OperationalError


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


@shared_task(
    name="workflows.run_workflow_chunk",
    acks_late=True,
    # A pool process lost in the middle hands the range back to the queue: the range is one
    # transaction, done once (its row is marked in that transaction).
    reject_on_worker_lost=True,
    max_retries=3,
)
def run_workflow_chunk(run_id: int, lo: int, token: str, preflight_done: bool) -> dict:
    """One range of contact ids of a run shared by the workers, under the run's lease."""
    from workflows.runs import workflow_run_chunk_execute

    outcome = workflow_run_chunk_execute(
        run_id=run_id, lo=lo, token=token, preflight_done=preflight_done
    )
    return {"run": run_id, "lo": lo, "outcome": outcome}


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


def event_workflows_enabled() -> bool:
    """Whether an event-triggered workflow is enabled: one indexless query over a handful
    of workflows. The contact listener's `listening` (WorkflowsConfig.ready)."""
    from workflows.models import Workflow

    return Workflow.objects.filter(enabled=True, event_triggered=True).exists()


def on_contacts_changed(ids: list[int]) -> None:
    """contacts.hooks contact listener (registered in WorkflowsConfig.ready): after commit,
    and only while `event_workflows_enabled` (the hooks ask it first)."""
    evaluate_changed_contacts.delay(list(ids))


@shared_task(
    name="workflows.recompute_scores", bind=True, acks_late=True, max_retries=3, ignore_result=False
)
def recompute_scores(
    self, contacts_since: str | None = None, dry_run: bool = False, now: str | None = None
) -> dict:
    """Rebuild every lead score from the events and the rules (daily, beat schedule), the
    work shared by the workers: this task reads the rules once, freezes `now` and replaces
    itself with a chord — one `workflows.recompute_scores_chunk` a range of contact ids,
    run by whichever workers are free, then `workflows.recompute_scores_total`, which sums
    them. The chord's result is this task's (its id is this task's id), so a caller reads
    the total as it would have read this task's.

    Idempotent: a rerun rewrites only the scores that differ, so a recompute whose chunk
    failed is done again by running it again. `contacts_since` (ISO 8601) limits it to
    contacts engaged since then; `dry_run` counts and writes nothing; `now` (ISO 8601)
    scores as of then. Without a broker the chunks run here, one after the other.
    """
    from celery import chord
    from celery.result import allow_join_result
    from django.utils.dateparse import parse_datetime

    from workflows.scoring import ScoreRecompute, scores_recompute_chunks

    started = time.time()
    rules, chunks = scores_recompute_chunks(
        now=parse_datetime(now) if now else None,
        contacts_since=parse_datetime(contacts_since) if contacts_since else None,
        dry_run=dry_run,
    )
    if not chunks:  # scoring is off, or no contact: nothing to share
        return ScoreRecompute(rules=rules, dry_run=dry_run).as_dict()
    shared = chord(
        [recompute_scores_chunk.s(**chunk) for chunk in chunks],
        recompute_scores_total.s(rules=rules, dry_run=dry_run, started=started),
    )
    # Run eagerly (no broker), `replace` applies the chord here and joins its chunks'
    # results, which Celery refuses inside a task unless allowed; on a worker it only
    # queues the chord, and the join is the chord's own.
    with allow_join_result():
        return self.replace(shared)


@shared_task(
    name="workflows.recompute_scores_chunk",
    acks_late=True,
    # A pool process lost in the middle of a chunk hands the chunk back to the queue rather
    # than failing the chord: the chunk is idempotent and one transaction. (A worker killed
    # whole leaves the message unacknowledged: Redis redelivers it after its visibility
    # timeout.)
    reject_on_worker_lost=True,
    autoretry_for=(OperationalError,),  # a deadlock or a dropped connection: try again
    retry_backoff=True,
    max_retries=3,
    ignore_result=False,  # the chord sums the chunks' results
)
def recompute_scores_chunk(**chunk) -> int:
    """One range of contact ids of a shared recompute (`scores_recompute_chunk`); returns the
    scores it rewrote."""
    from workflows.scoring import scores_recompute_chunk

    return scores_recompute_chunk(**chunk)


@shared_task(
    name="workflows.recompute_scores_total", acks_late=True, max_retries=3, ignore_result=False
)
def recompute_scores_total(changed: list[int], *, rules: int, dry_run: bool, started: float):
    """The chord's body: every chunk is done; their counts summed."""
    from workflows.scoring import scores_recompute_total

    return scores_recompute_total(
        changed=changed, rules=rules, dry_run=dry_run, started=started
    ).as_dict()


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
