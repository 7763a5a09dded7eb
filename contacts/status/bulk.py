"""Status changes over many contacts, run in the background (DESIGN §3: "all N matching").

A change over the whole matching set of the admin's list, or over more contacts than
`BULK_STATUS_JOB_THRESHOLD` by the API's filter, is a `BulkStatusJob` instead of one long
request:

1. **Submit** (`bulk_status_job_submit`, in the request): the job row and its frozen
   target — the contacts the criteria match *now*, copied by one `INSERT … SELECT` into
   `BulkStatusJobContact` — are written in one transaction, and the job is queued after
   commit. A retry under the same idempotency key returns the same job.
2. **Run** (`bulk_status_job_run`, the Celery task `contacts.run_bulk_status_job`): the
   worker claims the job under a lease (`crm.jobs`) and goes through the target in chunks
   of `BULK_STATUS_JOB_CHUNK` contact ids. Each chunk is one call of the one status service
   (`contacts_set_marketing` / `contacts_set_non_marketing`) with the key
   `bulk-job:<id>:<first>-<last>`, and its counts and the cursor are saved in the chunk's
   own transaction: a job killed half-way is resumed from its cursor, and a chunk is never
   counted or written twice.
3. **Guardrails**, as the synchronous path uses them: before its first chunk, a job that
   sets contacts marketing checks its whole size against the per-operation limit and the
   hard cap; past either, the whole change goes to the service guarded, which holds it for
   approval (one `PendingApproval` naming every contact, exactly as a synchronous bulk
   action would). Each chunk is then checked against the hard cap alone
   (`operation_limit=False`); a chunk held there stops the job, held, with what was done
   kept. Once an approver has run the held change, reading the job (its page, the API)
   marks it done, or queues it again to finish the chunks after the held one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Max, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from contacts.models import Contact, StatusSourceType
from contacts.status.guardrails import hold_reason, new_marketing_count
from contacts.status.models import (
    ApprovalStatus,
    BulkJobStatus,
    BulkStatusJob,
    BulkStatusJobContact,
    PendingApproval,
    StatusChangeRequest,
)
from contacts.status.results import (
    SET_MARKETING,
    SET_NON_MARKETING,
    ChangeHeld,
    IdempotencyConflict,
    StatusChangeResult,
    StatusError,
    StatusSource,
)
from contacts.status.services import contacts_set_marketing, contacts_set_non_marketing
from crm import jobs
from crm.models import Account
from crm.rows import row_get_or_create

logger = logging.getLogger(__name__)

# Contacts per chunk: one status-service call and one transaction each (~40 KB of ids); a
# chunk takes well under a second, far inside the lease.
BULK_STATUS_JOB_CHUNK = 5_000


class BulkJobStateError(StatusError):
    """The job cannot do what was asked in its present state; the message says why."""


def bulk_status_job_threshold() -> int:
    """Above this many contacts a status change by criteria runs in the background."""
    return int(getattr(settings, "BULK_STATUS_JOB_THRESHOLD", 1_000))


def _fingerprint(operation: str, criteria: dict) -> str:
    raw = f"{operation}|{json.dumps(criteria, sort_keys=True, default=str)}"
    return hashlib.sha256(raw.encode()).hexdigest()


def _members(job_id: int) -> QuerySet:
    return BulkStatusJobContact.objects.filter(job_id=job_id)


def bulk_status_job_target(*, job: BulkStatusJob, after: int = 0, through: int | None = None):
    """The job's frozen contacts (those still existing), optionally those with ids in
    (after, through]; read through bulkstatusjobcontact_once."""
    members = _members(job.pk)
    if after:
        members = members.filter(contact_id__gt=after)
    if through is not None:
        members = members.filter(contact_id__lte=through)
    return Contact.objects.filter(pk__in=members.values("contact_id"))


def _freeze_target(job: BulkStatusJob, contacts: QuerySet) -> int:
    """Copy the contacts `contacts` matches now into the job's target: one INSERT … SELECT."""
    sql, params = contacts.order_by().values("pk").query.sql_with_params()
    table = BulkStatusJobContact._meta.db_table
    with connection.cursor() as cursor:
        # "WHERE true" lets SQLite parse ON CONFLICT after a SELECT; a join in the
        # criteria (a list membership) can repeat a contact, which is kept once.
        cursor.execute(
            f"INSERT INTO {table} (job_id, contact_id) "
            f"SELECT %s, matched.* FROM ({sql}) AS matched WHERE true ON CONFLICT DO NOTHING",
            [job.pk, *params],
        )
        inserted = cursor.rowcount
    if inserted is None or inserted < 0:
        inserted = _members(job.pk).count()
    return inserted


def bulk_status_job_submit(
    *,
    contacts: QuerySet,
    operation: str,
    criteria: dict,
    origin: str,
    actor,
    idempotency_key: str,
    as_of: dt.datetime | None = None,
    enqueue: bool = True,
) -> tuple[BulkStatusJob, bool]:
    """(the job, whether this call created it). The contacts `contacts` matches now are its
    target; it runs after commit. The same key with the same request returns the same job;
    with another request it is refused (`IdempotencyConflict`)."""
    if operation not in (SET_MARKETING, SET_NON_MARKETING):
        raise StatusError(
            f"Unknown operation {operation!r}; use set_marketing or set_non_marketing."
        )
    fingerprint = _fingerprint(operation, criteria)
    now = as_of or timezone.now()

    def create() -> BulkStatusJob:
        job = BulkStatusJob.objects.create(
            operation=operation,
            origin=origin,
            criteria=criteria,
            as_of=now,
            idempotency_key=idempotency_key,
            fingerprint=fingerprint,
            requested_by=actor if getattr(actor, "pk", None) else None,
        )
        job.total = _freeze_target(job, contacts)
        job.save(update_fields=["total"])
        return job

    with transaction.atomic():
        job, created = row_get_or_create(
            BulkStatusJob, lookup={"idempotency_key": idempotency_key}, create=create
        )
        if not created and job.fingerprint != fingerprint:
            raise IdempotencyConflict(
                f"The idempotency key {idempotency_key!r} was already used for a different request."
            )
        if created and enqueue:
            _enqueue(job)
    return job, created


def _enqueue(job: BulkStatusJob) -> None:
    """Queue the job after commit. A broker that does not answer leaves it failed with the
    reason (nothing was changed yet; a resume queues it again)."""
    from contacts.tasks import run_bulk_status_job

    pk = job.pk

    def not_queued(message: str) -> None:
        BulkStatusJob.objects.filter(pk=pk, status=BulkJobStatus.QUEUED).update(
            status=BulkJobStatus.FAILED, message=message
        )

    jobs.enqueue(
        run_bulk_status_job,
        pk,
        what=f"The bulk status change #{pk}",
        remedy="It is stored: resume it once the queue is back.",
        on_failure=not_queued,
    )


def _source(job: BulkStatusJob) -> StatusSource:
    via = "the API" if job.origin == "api" else "the admin"
    return StatusSource(
        StatusSourceType.BULK_ACTION, id=str(job.pk), name=f"{job.source_name} ({via})"
    )


def _counts(job: BulkStatusJob, result: StatusChangeResult) -> dict:
    """The job's counts with a chunk's result added (F() expressions: saved with the chunk)."""
    fields = {
        "done": F("done") + result.matched,
        "already": F("already") + result.already,
    }
    if job.operation == SET_MARKETING:
        fields["changed"] = F("changed") + result.changed
        fields["cancelled"] = F("cancelled") + result.cancelled
    else:
        fields["changed"] = F("changed") + result.scheduled
        if result.effective_from:
            fields["effective_from"] = result.effective_from
    return fields


def _change(job: BulkStatusJob, target, key: str, *, whole: bool) -> StatusChangeResult:
    common = {
        "contacts": target,
        "source": _source(job),
        "actor": job.requested_by,
        "idempotency_key": key,
    }
    if job.operation == SET_MARKETING:
        # The whole set: both guardrails, as the synchronous path. A chunk: the hard cap
        # alone, the per-operation limit having been checked on the whole job.
        return contacts_set_marketing(**common, guarded=True, operation_limit=whole)
    return contacts_set_non_marketing(**common)


def _held_fields(job: BulkStatusJob, key: str, held: ChangeHeld) -> dict:
    approval = PendingApproval.objects.get(idempotency_key=key)
    if job.done:
        text = (
            f"{job.done:,} of {job.total:,} contacts were done; the rest waits. {held} "
            "Once it is approved, this job goes on with the remaining contacts."
        )
    else:
        text = f"Nothing was changed yet. {held}"
    return {
        "status": BulkJobStatus.HELD,
        "approval": approval,
        "approval_key": key,
        "held": approval.new_marketing,
        "message": text,
    }


def _needs_whole_hold(job: BulkStatusJob, now: dt.datetime) -> bool:
    """A set-marketing job not started yet that the guardrails would hold as a whole."""
    from contacts.status.selectors import usage_current

    if job.operation != SET_MARKETING or job.cursor or job.done or job.approval_key:
        return False
    account = Account.load()
    if account.hard_cap is None and account.operation_limit is None:
        return False
    _, new = new_marketing_count(bulk_status_job_target(job=job), at=now)
    live = usage_current(at=now).live_count
    return hold_reason(new_marketing=new, live_after=live + new, account=account) is not None


def _next_upper(job: BulkStatusJob, chunk: int) -> int | None:
    """The last contact id of the next chunk (the chunk-th member after the cursor), or None
    when no member is left. The unique (job, contact) index serves it."""
    members = _members(job.pk).filter(contact_id__gt=job.cursor).order_by("contact_id")
    ids = list(members.values_list("contact_id", flat=True)[chunk - 1 : chunk])
    if ids:
        return ids[0]
    return members.aggregate(last=Max("contact_id"))["last"]


def bulk_status_job_run(*, job_id: int, chunk: int | None = None) -> BulkStatusJob:
    """The background job: runs a queued job, or a running one whose worker died (its lease
    ran out: a redelivered task); anything else is returned as it is."""
    chunk = chunk or BULK_STATUS_JOB_CHUNK
    lease = jobs.lease_claim(
        BulkStatusJob,
        job_id,
        statuses=[BulkJobStatus.QUEUED, BulkJobStatus.RUNNING],
        status=BulkJobStatus.RUNNING,
        started_at=Coalesce(F("started_at"), Value(timezone.now())),
        message="",
    )
    job = BulkStatusJob.objects.select_related("requested_by").get(pk=job_id)
    if lease is None:
        return job
    try:
        if _needs_whole_hold(job, timezone.now()):
            key = f"bulk-job:{job.pk}:all"
            last = _members(job.pk).aggregate(last=Max("contact_id"))["last"] or 0
            held_fields = None
            with transaction.atomic():
                try:
                    result = _change(job, bulk_status_job_target(job=job), key, whole=True)
                except ChangeHeld as held:
                    held_fields = _held_fields(job, key, held)
                else:
                    # The counters moved since the check: the whole change ran at once.
                    lease.write(**_counts(job, result), cursor=last)
            if held_fields is not None:
                lease.release(**held_fields)
                job.refresh_from_db()
                return job
        while True:
            job.refresh_from_db()
            upper = job.chunk_upper if job.chunk_upper > job.cursor else _next_upper(job, chunk)
            if upper is None:
                break
            # Saved before the chunk runs, so a resumed job asks for the very same chunk (the
            # same key and contacts) even if some of its contacts were deleted meanwhile.
            lease.beat(chunk_upper=upper)
            key = f"bulk-job:{job.pk}:{job.cursor}-{upper}"
            target = bulk_status_job_target(job=job, after=job.cursor, through=upper)
            held_fields = None
            with transaction.atomic():
                try:
                    result = _change(job, target, key, whole=False)
                except ChangeHeld as held:
                    held_fields = _held_fields(job, key, held)
                else:
                    lease.write(**_counts(job, result), cursor=upper)
            if held_fields is not None:
                lease.release(**held_fields)
                job.refresh_from_db()
                return job
    except jobs.LeaseLost:
        logger.warning("bulk status change %s: this worker lost its lease and stops", job_id)
        job.refresh_from_db()
        return job
    except Exception as error:  # recorded on the job; the worker's log has the trace
        logger.exception("bulk status change %s failed", job_id)
        lease.release(
            status=BulkJobStatus.FAILED,
            finished_at=timezone.now(),
            message=(
                f"The job stopped on an internal error ({error.__class__.__name__}). Resume it "
                "to finish: what it saved is kept and is not done twice."
            ),
        )
        job.refresh_from_db()
        return job
    lease.release(status=BulkJobStatus.DONE, finished_at=timezone.now(), message="")
    job.refresh_from_db()
    return job


def bulk_status_job_sync(*, job: BulkStatusJob) -> BulkStatusJob:
    """A job as it stands when its page or API is read: one whose worker died (its lease
    ran out) is marked failed; a held one whose approval was decided goes on — done when the
    whole change was held, queued again for the chunks after a held chunk — or stops when
    it was rejected."""
    if job.status == BulkJobStatus.RUNNING:
        if jobs.jobs_expire_stale(model=BulkStatusJob, pk=job.pk):
            job.refresh_from_db()
        return job
    if job.status != BulkJobStatus.HELD or job.approval_id is None:
        return job
    approval = PendingApproval.objects.filter(pk=job.approval_id).first()
    if approval is None or approval.status == ApprovalStatus.PENDING:
        return job
    held = BulkStatusJob.objects.filter(pk=job.pk, status=BulkJobStatus.HELD)
    if approval.status != ApprovalStatus.APPROVED:
        held.update(
            status=BulkJobStatus.REJECTED,
            held=0,
            finished_at=timezone.now(),
            message=(
                f"The held part was {approval.get_status_display().lower()}: the contacts "
                "it named were not changed, and the job stopped there."
            ),
        )
    elif job.approval_key.endswith(":all"):
        request = StatusChangeRequest.objects.filter(idempotency_key=job.approval_key).first()
        result = StatusChangeResult.from_dict(request.result) if request else None
        if result is not None:
            with transaction.atomic():
                if held.update(status=BulkJobStatus.DONE, held=0, finished_at=timezone.now()):
                    BulkStatusJob.objects.filter(pk=job.pk).update(
                        **_counts(job, result),
                        message="The change was approved and has run.",
                    )
    else:
        with transaction.atomic():
            if held.update(
                status=BulkJobStatus.QUEUED,
                held=0,
                message="The held part was approved; the job goes on.",
            ):
                _enqueue(job)
    job.refresh_from_db()
    return job


def bulk_status_job_resume(*, job: BulkStatusJob) -> BulkStatusJob:
    """Queue a failed job again: it goes on from its cursor. Refused while a worker holds it,
    once it has finished, and while its held part waits for approval."""
    jobs.jobs_expire_stale(model=BulkStatusJob, pk=job.pk)
    job = bulk_status_job_sync(job=BulkStatusJob.objects.get(pk=job.pk))
    if job.status == BulkJobStatus.RUNNING:
        raise BulkJobStateError(
            "This job is running: its worker renewed its lease until "
            f"{job.lease_expires_at:%H:%M:%S} UTC. It can be resumed once it stops."
        )
    if job.status == BulkJobStatus.HELD:
        raise BulkJobStateError(
            "This job waits for the approval of its held part; it goes on once that is approved."
        )
    if job.status in (BulkJobStatus.DONE, BulkJobStatus.REJECTED):
        raise BulkJobStateError("This job has finished; there is nothing to resume.")
    if job.status == BulkJobStatus.QUEUED:
        return job
    with transaction.atomic():
        if BulkStatusJob.objects.filter(pk=job.pk, status=BulkJobStatus.FAILED).update(
            status=BulkJobStatus.QUEUED, message="", finished_at=None
        ):
            _enqueue(job)
    job.refresh_from_db()
    return job


def bulk_status_job_sample(*, job: BulkStatusJob, limit: int = 10) -> list[Contact]:
    """The first contacts of the job's target, by id (for its result page)."""
    return list(bulk_status_job_target(job=job).order_by("pk")[:limit])
