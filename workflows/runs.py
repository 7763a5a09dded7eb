"""Workflow runs: request, execute (in chunks), hold, approve or reject; and the triggers that
request them — the schedule, contact events and the command (DESIGN §1.5;
docs/ARCHITECTURE.md "Workflows").

How a run works:

* The contacts it acts on are the NEWLY matching ones (`workflow_candidates`): the
  criteria's matches less the contacts with an active enrollment in this workflow (without
  re-enrollment every enrollment stays active forever; with it, a run that sees an
  enrolled contact no longer matching marks it exited, and a later match enrolls it
  again). Exclusion wins: contacts an enabled exclusion workflow matches are refused.
* Before writing anything, a run that sets marketing previews the whole new set once: past
  the workflow's per-run limit, or where billing's guardrails would hold it (the
  preview's `extra["cost"]["hold_reason"]`, billing's own rule), the run is HELD and
  nothing is written; an approver releases it (`workflow_run_approve`) or rejects it.
* Then chunks of contact ids (WORKFLOW_RANGE_BATCH wide), each ONE transaction: exits,
  then one INSERT … SELECT … ON CONFLICT into the enrollments (the run's id on each
  row), then every action over "the contacts this run enrolled in this id range" —
  a durable set, so each action is idempotent on a rerun: the status service by its
  idempotency key (run id + chunk), the property update writes only differing rows,
  audiences are ON CONFLICT, emails are at most once per contact (EmailSend). Marketing
  email goes out after the chunk commits (a send cannot be rolled back), then the
  run's cursor moves past the chunk. A run killed half-way is rerun from its cursor.
* A worker holds the run under a lease (crm.jobs), renewed after each chunk: a run whose
  worker died is marked failed once its lease runs out, and `workflow_run_resume` queues
  it again. The chunk's transaction moves the cursor with the chunk's counts, so a
  replayed chunk is never counted twice; marketing email, sent after the commit, has its
  own cursor (`emailed_through`), and a resumed run first sends what a killed one had not.
* Shared by the workers (WORKFLOW_RUNS_SHARED, on with a broker): a run over the whole
  table records its ranges as `WorkflowRunChunk` rows and queues one task per range
  (`workflows.run_workflow_chunk`), which any worker takes, carrying the run's lease token.
  Each chunk is the same transaction as above; instead of the cursor it marks its own row
  done (a range delivered twice rolls back the second time: nothing is done or counted
  twice), renews the run's lease, and the chunk that finds every range emailed finishes
  the run. A chunk whose lease is gone (the run failed, was held, or was resumed under a
  new lease) does nothing; a resume queues the ranges not yet done.
"""

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connection, transaction
from django.db.models import (
    BigIntegerField,
    Count,
    DateTimeField,
    F,
    IntegerField,
    Max,
    Min,
    QuerySet,
    Value,
)
from django.utils import timezone

from contacts.criteria import criteria_validate
from contacts.models import Contact
from contacts.outreach.models import AdAudience, MarketingEmail
from contacts.outreach.services import (
    ad_audience_add,
    ad_audience_remove,
    marketing_email_send,
)
from contacts.services import contacts_set_property
from contacts.status.results import SET_MARKETING, ChangeHeld
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
    contacts_status_preview,
)
from crm import jobs
from crm.locks import lock_usage, lock_workflow_run
from crm.rows import row_get_or_create
from workflows.models import (
    ActionType,
    Enrollment,
    RunStatus,
    RunTrigger,
    Workflow,
    WorkflowRun,
    WorkflowRunChunk,
)
from workflows.services import (
    RunNotAllowed,
    WorkflowError,
    exclusion_q,
    workflow_candidates,
    workflow_hold_reasons,
    workflow_matching,
    workflow_status_source,
)

logger = logging.getLogger(__name__)

# Contact ids per run chunk: one transaction, one enrollment INSERT, one status statement.
WORKFLOW_RANGE_BATCH = 50_000
# The actions that change the marketing status (through contacts' status service).
APPROVE_PERMISSIONS = ("workflows.approve_run", "billing.approve_overage")
BILLING_APPROVE_PERMISSION = "billing.approve_overage"

RunProgress = Callable[[int, int], None]


def workflow_run_request(
    *,
    workflow: Workflow,
    trigger: str,
    actor=None,
    contact_ids: list[int] | None = None,
    idempotency_key: str | None = None,
    enqueue: bool = True,
) -> WorkflowRun:
    """Record a queued run and (after commit) enqueue it. A reused idempotency key answers
    the run it made, and makes no second one."""
    fields = {
        "workflow": workflow,
        "trigger": trigger,
        "contact_ids": contact_ids,
        "requested_by": actor if getattr(actor, "pk", None) else None,
    }
    if not idempotency_key:
        run = WorkflowRun.objects.create(**fields)
    else:
        run, created = row_get_or_create(
            WorkflowRun, lookup={"idempotency_key": idempotency_key}, defaults=fields
        )
        if not created:
            if run.workflow_id != workflow.pk:
                raise WorkflowError(
                    f"The idempotency key {idempotency_key!r} was used for another workflow."
                )
            return run
    if trigger not in (RunTrigger.EVENT, RunTrigger.SCHEDULE):
        # A manual run counts as the latest run (the dispatcher sets it for scheduled ones;
        # event runs, about single contacts, do not move the schedule).
        Workflow.objects.filter(pk=workflow.pk).update(last_run_at=run.created_at)
    if enqueue:
        _enqueue_run(run)
    return run


def _enqueue_run(run: WorkflowRun) -> None:
    """Queue the run's task after commit. A broker that does not answer leaves the run
    failed with the reason (nothing ran; a resume queues it again) and raises
    `JobNotQueued` to the caller."""
    from workflows.tasks import run_workflow

    pk = run.pk

    def not_queued(message: str) -> None:
        WorkflowRun.objects.filter(pk=pk, status=RunStatus.QUEUED).update(
            status=RunStatus.FAILED, error=message[:2000], finished_at=timezone.now()
        )

    jobs.enqueue(
        run_workflow,
        pk,
        what=f"Run #{pk} of the workflow #{run.workflow_id}",
        remedy="It is recorded and has not run: resume it once the queue is back.",
        on_failure=not_queued,
        embedded_thread=False,
    )


def workflow_run_resume(*, run: WorkflowRun, enqueue: bool = True) -> WorkflowRun:
    """Queue a failed run again — its worker died (its lease ran out), it stopped on an
    error, or its task was never queued: it goes on from its cursor, doing nothing twice.
    Refused while a worker holds it, and for a run that is not failed."""
    jobs.jobs_expire_stale(model=WorkflowRun, pk=run.pk)
    run = WorkflowRun.objects.get(pk=run.pk)
    if run.status == RunStatus.RUNNING:
        raise WorkflowError(
            f"Run #{run.pk} is running: its worker renewed its lease until "
            f"{run.lease_expires_at:%H:%M:%S} UTC. It can be resumed once it stops."
        )
    updated = WorkflowRun.objects.filter(pk=run.pk, status=RunStatus.FAILED).update(
        status=RunStatus.QUEUED, error="", finished_at=None
    )
    if not updated:
        raise WorkflowError(
            f"Run #{run.pk} is {run.get_status_display().lower()}; only a failed run is resumed."
        )
    run.refresh_from_db()
    if enqueue:
        _enqueue_run(run)
    return run


def _fail(run: WorkflowRun, lease: jobs.Lease, message: str) -> WorkflowRun:
    lease.release(status=RunStatus.FAILED, error=message[:2000], finished_at=timezone.now())
    run.refresh_from_db()
    return run


def workflow_run_execute(
    *, run: WorkflowRun, progress: RunProgress | None = None, at: dt.datetime | None = None
) -> WorkflowRun:
    """Run (or resume) a run. Returns at once unless it is queued, running or failed
    (a failed or killed run resumes from its cursor). Never raises for a run's own
    failure: the run records it (status failed, error)."""
    started = timezone.now()
    lease = jobs.lease_claim(
        WorkflowRun,
        run.pk,
        statuses=[RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.FAILED],
        status=RunStatus.RUNNING,
        error="",
        started_at=started,
    )
    run = WorkflowRun.objects.select_related("workflow", "requested_by").get(pk=run.pk)
    if lease is None:  # finished, held, or another worker holds it
        return run
    workflow = run.workflow
    if run.as_of is None:
        run.as_of = at or started
        WorkflowRun.objects.filter(pk=run.pk).update(as_of=run.as_of)
    _recorded(run, lease, lambda: _execute(run, workflow, lease=lease, progress=progress))
    run.refresh_from_db()
    return run


def _recorded(run: WorkflowRun, lease: jobs.Lease, work: Callable[[], str | None]) -> str:
    """`work()` for the run under `lease`, its own failures recorded on the run, never
    raised: what `work` returns ("done" for None), "lease lost" (another worker owns the
    run, or it ended), "held" (the hard cap held a chunk: a race with the preflight; the
    chunk rolled back, the run waits instead) or "failed"."""
    try:
        return work() or "done"
    except jobs.LeaseLost:
        logger.warning("workflow run %s: this worker lost its lease and stops", run.pk)
        return "lease lost"
    except ChangeHeld as held:
        _hold(run, lease, billing=held.reason)
        return "held"
    except Exception as error:  # recorded on the run; the log has the trace
        logger.exception("workflow run %s failed", run.pk)
        _fail(run, lease, f"The run stopped on an error ({error.__class__.__name__}: {error}).")
        return "failed"


def _hold(run: WorkflowRun, lease: jobs.Lease, *, limit: str = "", billing: str = "") -> None:
    reasons = [r for r in (limit, billing) if r]
    lease.release(
        status=RunStatus.HELD,
        hold_reason="; ".join(reasons).capitalize()[:2000],
        held_by_limit=bool(limit),
        held_by_billing=bool(billing),
        finished_at=timezone.now(),
    )


def _execute(
    run: WorkflowRun, workflow: Workflow, *, lease: jobs.Lease, progress: RunProgress | None
) -> None:
    now = run.as_of
    ids = run.contact_ids
    if not criteria_validate(workflow.criteria).groups:
        _finish(lease)
        return
    kinds = workflow.action_types
    preflight_done = False
    chunked = ids is None and run.chunks.exists()  # a shared run resumed: its ranges are set
    if ActionType.SET_MARKETING in kinds and run.cursor == 0 and not chunked:
        candidates = workflow_candidates(workflow, now=now, ids=ids)
        status = contacts_status_preview(contacts=candidates.new, operation=SET_MARKETING, at=now)
        limit, billing = workflow_hold_reasons(workflow, status)
        limit = "" if run.limit_approved else limit
        billing = "" if run.billing_approved else billing
        WorkflowRun.objects.filter(pk=run.pk).update(would_become_marketing=status.would_change)
        if limit or billing:
            _hold(run, lease, limit=limit, billing=billing)
            return
        preflight_done = True
    if run.emailed_through < run.cursor:  # killed after a chunk's commit, before its email
        target = _enrolled_by(run, run.emailed_through, run.cursor if ids is None else None)
        _send_emails(run, workflow, lease=lease, target=target, through=run.cursor)
    if chunked or (ids is None and progress is None and settings.WORKFLOW_RUNS_SHARED):
        _share(run, workflow, lease=lease, preflight_done=preflight_done, progress=progress)
        return
    for done, total, lo, hi in _run_chunks(run, workflow, now=now, ids=ids):
        _run_chunk(
            run,
            workflow,
            lease=lease,
            now=now,
            ids=ids,
            lo=lo,
            hi=hi,
            preflight_done=preflight_done,
        )
        lease.beat()
        if progress:
            progress(done, total)
    _finish(lease)


def _finish(lease: jobs.Lease) -> None:
    lease.release(status=RunStatus.DONE, finished_at=timezone.now(), hold_reason="")


class _ChunkDoneAlready(Exception):
    """This range of a shared run was done by another delivery of its task: roll back."""


def _share(
    run: WorkflowRun,
    workflow: Workflow,
    *,
    lease: jobs.Lease,
    preflight_done: bool,
    progress: RunProgress | None,
) -> None:
    """Record the run's ranges (once) and hand each range not yet done to a chunk task,
    which any worker takes. With `progress` (a resumed shared run in the command), the
    ranges are run here, one after the other. The last chunk finishes the run."""
    if not run.chunks.exists():
        WorkflowRunChunk.objects.bulk_create(
            WorkflowRunChunk(run=run, lo=lo, hi=hi)
            for _, _, lo, hi in _run_chunks(run, workflow, now=run.as_of, ids=None)
        )
    pending = list(run.chunks.filter(emailed_at__isnull=True).values_list("lo", flat=True))
    if not pending:
        _finish(lease)
        return
    if progress is not None:
        total = run.chunks.count()
        for done, lo in enumerate(pending, start=total - len(pending) + 1):
            outcome = workflow_run_chunk_execute(
                run_id=run.pk, lo=lo, token=lease.token, preflight_done=preflight_done
            )
            if outcome != "done":  # held or failed: the run records why
                return
            progress(done, total)
        return
    from workflows.tasks import run_workflow_chunk

    for lo in pending:
        jobs.delay(
            run_workflow_chunk,
            run.pk,
            lo,
            lease.token,
            preflight_done,
            what=f"A range of contacts of run #{run.pk}",
            remedy="The run fails; resume it once the queue is back.",
        )


def workflow_run_chunk_execute(*, run_id: int, lo: int, token: str, preflight_done: bool) -> str:
    """One range of a shared run, on whichever worker took it, under the run's lease
    (`token`). Returns what happened: "done", "done already" (another delivery did it),
    "lease lost" (the run failed, was held or was resumed under a new lease), "held" or
    "failed" (the run records why, as a run in one process would)."""
    lease = jobs.Lease(WorkflowRun, run_id, token)
    chunk = (
        WorkflowRunChunk.objects.select_related("run__workflow", "run__requested_by")
        .filter(run_id=run_id, lo=lo)
        .first()
    )
    if chunk is None or chunk.emailed_at is not None:
        return "done already"
    run, workflow = chunk.run, chunk.run.workflow

    def work() -> str:
        lease.beat()
        try:
            if chunk.done_at is None:
                _run_chunk(
                    run,
                    workflow,
                    lease=lease,
                    now=run.as_of,
                    ids=None,
                    lo=chunk.lo,
                    hi=chunk.hi,
                    preflight_done=preflight_done,
                    chunk=chunk,
                )
            else:  # its worker died after the chunk's commit, before its email
                target = _enrolled_by(run, chunk.lo, chunk.hi)
                _send_emails(run, workflow, lease=lease, target=target, chunk=chunk)
        except _ChunkDoneAlready:
            return "done already"
        return "done"

    outcome = _recorded(run, lease, work)
    if outcome == "done" and not run.chunks.filter(emailed_at__isnull=True).exists():
        _finish(lease)
    return outcome


def _chunk_mark(lease: jobs.Lease, chunk: WorkflowRunChunk, *, done: bool, emailed: bool) -> None:
    """In the chunk's (or its email's) transaction: renew the run's lease and mark the range,
    or roll the transaction back if another delivery marked it first."""
    now = timezone.now()
    lease.write(lease_expires_at=now + jobs.lease_duration())
    unmarked = WorkflowRunChunk.objects.filter(
        pk=chunk.pk, **({"done_at__isnull": True} if done else {"emailed_at__isnull": True})
    )
    fields = {**({"done_at": now} if done else {}), **({"emailed_at": now} if emailed else {})}
    if not unmarked.update(**fields):
        raise _ChunkDoneAlready


def _run_chunks(run, workflow, *, now, ids):
    """(done, total, lo, hi) for each id range still to do (from the run's cursor)."""
    if ids is not None:
        if run.cursor == 0:
            yield 1, 1, 0, None
        return
    bounds = Contact.objects.order_by().aggregate(lo=Min("pk"), hi=Max("pk"))
    if bounds["lo"] is None:
        return
    first = max(bounds["lo"], run.cursor)
    starts = list(range(first, bounds["hi"] + 1, WORKFLOW_RANGE_BATCH))
    for done, lo in enumerate(starts, start=1):
        yield done, len(starts), lo, lo + WORKFLOW_RANGE_BATCH


def _in_range(queryset: QuerySet, lo: int, hi: int | None, field_name: str = "pk") -> QuerySet:
    if hi is None:
        return queryset
    return queryset.filter(**{f"{field_name}__gte": lo, f"{field_name}__lt": hi})


def _enrolled_by(run: WorkflowRun, lo: int, hi: int | None) -> QuerySet:
    """The contacts this run enrolled with ids in [lo, hi) (all of them when hi is None).

    The range bounds the enrollments' contact ids too, so a chunk reads its own part of
    enrollment_run_idx (run, contact) instead of every enrollment the run has made so far
    and probing the contacts table for each (which grew with every chunk). A subquery, not
    a join: the contacts table stays the query's only table, so a status change updates
    the rows straight from this filter (`contacts.status.sql`).
    """
    enrollments = Enrollment.objects.filter(run_id=run.pk)
    if hi is None:
        return Contact.objects.filter(pk__in=enrollments.values("contact_id"))
    enrollments = enrollments.filter(contact_id__gte=lo, contact_id__lt=hi)
    return Contact.objects.filter(pk__in=enrollments.values("contact_id"), pk__gte=lo, pk__lt=hi)


@dataclass(frozen=True)
class _EnrollStatement:
    """The enrollment INSERT in its three parts, kept apart so that PostgreSQL's path can
    wrap the SELECT in a CTE that also counts the matches."""

    insert: str
    select: str
    conflict: str
    params: list

    @property
    def sql(self) -> str:
        return f"{self.insert} {self.select} {self.conflict}"


def _enroll_sql(workflow: Workflow, run: WorkflowRun, new: QuerySet, now) -> _EnrollStatement:
    """One INSERT … SELECT … ON CONFLICT for the chunk's new contacts (PostgreSQL and SQLite ≥
    3.35 alike). A re-enrollment workflow revives an exited enrollment instead."""
    rows = (
        new.order_by()
        .annotate(
            _w=Value(workflow.pk, output_field=BigIntegerField()),
            _c=F("pk"),
            _r=Value(run.pk, output_field=BigIntegerField()),
            _e=Value(now, output_field=DateTimeField()),
            _m=Value(now, output_field=DateTimeField()),
            _t=Value(1, output_field=IntegerField()),
        )
        .values_list("_w", "_c", "_r", "_e", "_m", "_t")
    )
    select_sql, select_params = rows.query.sql_with_params()
    table = Enrollment._meta.db_table
    if workflow.re_enrollment:
        conflict = (
            f"DO UPDATE SET run_id = excluded.run_id, last_matched_at = excluded.last_matched_at, "
            f"exited_at = NULL, times = {table}.times + 1 WHERE {table}.exited_at IS NOT NULL"
        )
    else:
        conflict = "DO NOTHING"
    # The SELECT always has a WHERE (criteria), so SQLite parses ON CONFLICT as the upsert's.
    return _EnrollStatement(
        insert=f"INSERT INTO {table} "
        "(workflow_id, contact_id, run_id, enrolled_at, last_matched_at, times)",
        select=select_sql,
        conflict=f"ON CONFLICT (workflow_id, contact_id) {conflict}",
        params=list(select_params),
    )


def _run_chunk(
    run,
    workflow,
    *,
    lease,
    now,
    ids,
    lo: int,
    hi: int | None,
    preflight_done: bool = False,
    chunk: WorkflowRunChunk | None = None,
) -> None:
    """One chunk: exits, enrollments, the database actions, the counts and the cursor (or
    the shared range's mark) in ONE transaction; then the emails (not undoable, at most once
    per contact)."""
    counts = {"matched": 0, "enrolled": 0, "changed": 0, "refused": 0}
    results: dict[str, dict] = {}
    base_ids = ids
    candidates = workflow_candidates(workflow, now=now, ids=base_ids)
    matching = _in_range(candidates.matching, lo, hi)
    # The INSERT's ON CONFLICT skips the contacts already enrolled (one probe of
    # enrollment_once each), so it reads the matching contacts without the "no active
    # enrollment" anti-join: the planner sizes that join from the enrollments' statistics,
    # which a first run makes stale as it goes (a nested loop over every enrollment per
    # contact, measured at seconds a chunk).
    insertable = (
        matching
        if candidates.excluded_q is None
        else matching.exclude(exclusion_q(workflow, now=now))
    )
    target = _enrolled_by(run, lo, hi)
    key = f"workflow-run:{run.pk}:{lo if hi is not None else 'ids'}"
    source = workflow_status_source(workflow)
    actor = run.requested_by
    with transaction.atomic():
        if workflow.changes_marketing_status:
            # The status change below takes the usage lock; take it before the enrollments
            # touch any contact (crm.locks), or a concurrent delete could deadlock with us.
            lock_usage()
        if workflow.re_enrollment:
            exited = _in_range(
                Enrollment.objects.filter(workflow_id=workflow.pk, exited_at__isnull=True),
                lo,
                hi,
                "contact_id",
            )
            if ids is not None:
                exited = exited.filter(contact_id__in=ids)
            exited.exclude(contact_id__in=matching.order_by().values("pk")).update(exited_at=now)
        try:
            enroll = _enroll_sql(workflow, run, insertable, now)
        except EmptyResultSet:
            enroll = None
        if enroll and connection.vendor == "postgresql" and candidates.excluded_q is None:
            # One pass over the chunk: the INSERT's SELECT also counts the matches.
            with connection.cursor() as cursor:
                cursor.execute(
                    f"WITH m AS MATERIALIZED ({enroll.select}), "
                    f"ins AS ({enroll.insert} SELECT * FROM m {enroll.conflict} RETURNING 1) "
                    "SELECT (SELECT COUNT(*) FROM m), (SELECT COUNT(*) FROM ins)",
                    enroll.params,
                )
                counts["matched"], counts["enrolled"] = cursor.fetchone()
        else:
            tallies = matching.order_by().aggregate(
                matched=Count("pk"),
                **(
                    {"excluded": Count("pk", filter=candidates.excluded_q)}
                    if candidates.excluded_q is not None
                    else {}
                ),
            )
            counts["matched"] = tallies["matched"]
            counts["refused"] = tallies.get("excluded") or 0
            if enroll and counts["matched"]:
                with connection.cursor() as cursor:
                    cursor.execute(enroll.sql, enroll.params)
                    counts["enrolled"] = max(cursor.rowcount, 0)
        for n, action in enumerate(workflow.actions):
            kind = action["type"]
            name = f"{n + 1}:{kind}"
            if kind == ActionType.SEND_MARKETING_EMAIL:
                continue  # after commit, below
            if kind == ActionType.SET_MARKETING:
                result = contacts_set_marketing(
                    contacts=target,
                    source=source,
                    actor=actor,
                    idempotency_key=f"{key}:{name}",
                    # Under the usage lock, each chunk against the hard cap; the per-operation
                    # limit was checked over the whole run by the preflight (a resumed run,
                    # with no preflight, checks it chunk by chunk). Approved overage: neither.
                    guarded=not run.billing_approved,
                    operation_limit=not preflight_done,
                    within=(lo, hi) if hi is not None else None,
                )
                if not result.replayed:
                    counts["changed"] += result.changed + result.cancelled
                    _add(results, name, changed=result.changed, cancelled=result.cancelled)
            elif kind == ActionType.SET_NON_MARKETING:
                result = contacts_set_non_marketing(
                    contacts=target, source=source, actor=actor, idempotency_key=f"{key}:{name}"
                )
                if not result.replayed:
                    counts["changed"] += result.scheduled
                    _add(results, name, scheduled=result.scheduled)
            elif kind == ActionType.SET_PROPERTY:
                change = contacts_set_property(
                    contacts=target, field=action["field"], value=action["value"], at=now
                )
                _add(results, name, changed=change.changed)
            elif kind in (ActionType.ADD_TO_AD_AUDIENCE, ActionType.REMOVE_FROM_AD_AUDIENCE):
                audience = AdAudience.objects.filter(pk=action["audience"]).first()
                if audience is None:
                    raise WorkflowError(
                        f"Action {n + 1}: ad audience #{action['audience']} is gone."
                    )
                if kind == ActionType.ADD_TO_AD_AUDIENCE:
                    change = ad_audience_add(audience=audience, contacts=target, actor=actor)
                    counts["refused"] += change.refused_non_marketing
                    _add(
                        results,
                        name,
                        added=change.added,
                        refused_non_marketing=change.refused_non_marketing,
                    )
                else:
                    change = ad_audience_remove(audience=audience, contacts=target, actor=actor)
                    _add(results, name, removed=change.removed)
        _add_counts(run, counts, results)
        through = hi if hi is not None else 1
        emails = _email_actions(workflow)
        # Only the worker holding the lease commits the chunk. Without email to send, the
        # email cursor (or mark) moves with the chunk's.
        if chunk is not None:
            _chunk_mark(lease, chunk, done=True, emailed=not emails)
        else:
            lease.write(cursor=through, **({} if emails else {"emailed_through": through}))
    if emails:
        _send_emails(run, workflow, lease=lease, target=target, through=through, chunk=chunk)
    run.refresh_from_db(fields=["cursor", "emailed_through", "results"])


def _email_actions(workflow: Workflow) -> list[tuple[int, dict]]:
    return [
        (n, action)
        for n, action in enumerate(workflow.actions)
        if action["type"] == ActionType.SEND_MARKETING_EMAIL
    ]


def _send_emails(
    run,
    workflow,
    *,
    lease,
    target: QuerySet,
    through: int = 0,
    chunk: WorkflowRunChunk | None = None,
) -> None:
    """The run's marketing email to `target` (each contact at most once, by EmailSend),
    after the chunk's commit; its counts and the email cursor (or the shared range's mark)
    move together."""
    actor = run.requested_by
    email_results: dict[str, dict] = {}
    refused = 0
    for n, action in _email_actions(workflow):
        email = MarketingEmail.objects.filter(pk=action["email"]).first()
        if email is None:
            raise WorkflowError(f"Action {n + 1}: marketing email #{action['email']} is gone.")
        outcome = marketing_email_send(email=email, contacts=target, actor=actor)
        breakdown = outcome.breakdown
        refused += (
            breakdown.excluded_non_marketing
            + breakdown.excluded_unsubscribed
            + breakdown.excluded_bounced
        )
        _add(
            email_results,
            f"{n + 1}:{ActionType.SEND_MARKETING_EMAIL}",
            sent=outcome.delivery.sent if outcome.delivery else 0,
            refused_non_marketing=breakdown.excluded_non_marketing,
            refused_unsubscribed=breakdown.excluded_unsubscribed,
            refused_bounced=breakdown.excluded_bounced,
        )
    with transaction.atomic():
        _add_counts(run, {"refused": refused}, email_results)
        if chunk is not None:
            _chunk_mark(lease, chunk, done=False, emailed=True)
        else:
            lease.write(emailed_through=through)


def _add(results: dict, name: str, **values: int) -> None:
    entry = results.setdefault(name, {})
    for k, v in values.items():
        entry[k] = entry.get(k, 0) + v


def _add_counts(run: WorkflowRun, counts: dict, results: dict) -> None:
    """Add a chunk's counts to the run (F(): no lost update), merge its per-action results.

    The run's row is locked while its results are read and merged, in a transaction of its
    own when the caller has none (the emails' counts come after the chunk's commit).
    """
    with transaction.atomic(savepoint=False):
        locked = lock_workflow_run(run.pk)
        merged = dict(locked.results or {})
        for name, values in results.items():
            entry = dict(merged.get(name, {}))
            for k, v in values.items():
                entry[k] = entry.get(k, 0) + v
            merged[name] = entry
        WorkflowRun.objects.filter(pk=run.pk).update(
            results=merged, **{k: F(k) + v for k, v in counts.items() if v}
        )


def workflow_run_approve(*, run: WorkflowRun, user, execute: bool = True) -> WorkflowRun:
    """Release a held run: past the per-run limit it needs workflows.approve_run or
    billing.approve_overage; held by billing's guardrails, billing.approve_overage (billing's
    approval, given here by the same kind of user). Then it runs (or is queued)."""
    run = WorkflowRun.objects.get(pk=run.pk)
    if run.status != RunStatus.HELD:
        raise WorkflowError(f"Run #{run.pk} is {run.get_status_display().lower()}, not held.")
    if run.held_by_limit and not any(user.has_perm(p) for p in APPROVE_PERMISSIONS):
        raise RunNotAllowed("Approving a run past its limit needs workflows.approve_run.")
    if run.held_by_billing and not user.has_perm(BILLING_APPROVE_PERMISSION):
        raise RunNotAllowed(
            "This run is held by billing's guardrails: approving it needs billing.approve_overage."
        )
    updated = WorkflowRun.objects.filter(pk=run.pk, status=RunStatus.HELD).update(
        status=RunStatus.QUEUED,
        limit_approved=run.limit_approved or run.held_by_limit,
        billing_approved=run.billing_approved or run.held_by_billing,
        decided_by=user,
        decided_at=timezone.now(),
        finished_at=None,
    )
    logger.info("workflow run %s approved by %s (%s)", run.pk, user, run.hold_reason)
    run.refresh_from_db()
    if updated and execute:
        _enqueue_run(run)
    return run


def workflow_run_reject(*, run: WorkflowRun, user) -> WorkflowRun:
    if not any(user.has_perm(p) for p in APPROVE_PERMISSIONS):
        raise RunNotAllowed("Rejecting a held run needs workflows.approve_run.")
    updated = WorkflowRun.objects.filter(pk=run.pk, status=RunStatus.HELD).update(
        status=RunStatus.REJECTED, decided_by=user, decided_at=timezone.now()
    )
    if not updated:
        raise WorkflowError(f"Run #{run.pk} is not held.")
    logger.info("workflow run %s rejected by %s", run.pk, user)
    run.refresh_from_db()
    return run


def workflows_dispatch_due(*, now: dt.datetime | None = None) -> list[int]:
    """Queue a run of each enabled scheduled workflow whose interval has passed. Two
    dispatchers at once queue one run: last_run_at is moved by compare-and-set."""
    now = now or timezone.now()
    queued = []
    for workflow in Workflow.objects.filter(enabled=True, schedule_minutes__isnull=False):
        previous = workflow.last_run_at
        if previous and previous + dt.timedelta(minutes=workflow.schedule_minutes) > now:
            continue
        with transaction.atomic():
            claimed = Workflow.objects.filter(pk=workflow.pk, last_run_at=previous).update(
                last_run_at=now
            )
            if not claimed:
                continue
            run = workflow_run_request(workflow=workflow, trigger=RunTrigger.SCHEDULE)
            queued.append(run.pk)
    return queued


def workflows_on_contacts_changed(
    *, contact_ids: list[int], at: dt.datetime | None = None
) -> list[int]:
    """Evaluate these contacts (only these: pk IN ids, whatever the table's size) against
    every enabled event-triggered workflow. A run is recorded only for a workflow with
    something to do; re-enrollment exits are recorded on the enrollments alone."""
    now = at or timezone.now()
    runs = []
    for workflow in Workflow.objects.filter(enabled=True, event_triggered=True):
        if not criteria_validate(workflow.criteria).groups:
            continue
        if workflow.re_enrollment:
            matching = workflow_matching(workflow, now=now, ids=contact_ids)
            Enrollment.objects.filter(
                workflow_id=workflow.pk, exited_at__isnull=True, contact_id__in=contact_ids
            ).exclude(contact_id__in=matching.order_by().values("pk")).update(exited_at=now)
        candidates = workflow_candidates(workflow, now=now, ids=contact_ids)
        if not candidates.new.exists():
            continue
        run = workflow_run_request(
            workflow=workflow, trigger=RunTrigger.EVENT, contact_ids=contact_ids, enqueue=False
        )
        runs.append(workflow_run_execute(run=run, at=now).pk)
    return runs


def workflow_run_now(
    *, workflow: Workflow, trigger: str = RunTrigger.COMMAND, actor=None, progress=None
) -> WorkflowRun:
    """Record a run and execute it in this process (the command)."""
    run = workflow_run_request(workflow=workflow, trigger=trigger, actor=actor, enqueue=False)
    return workflow_run_execute(run=run, progress=progress)
