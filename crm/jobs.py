"""Background jobs: starting them after commit, and the lease a worker holds while it works.

**Starting.** With a broker, a job is a Celery task on a worker. The embedded default has
no broker and runs tasks eagerly; a long job run eagerly inside the request that starts it
would hold the page until it ends, so nobody could watch its progress. There, with
`EMBEDDED_BACKGROUND_JOBS` (on by default, off in tests), the job runs in a thread of this
process instead: the page returns at once and the job's progress shows on the next request.
A broker that does not answer raises `JobNotQueued`, whose message says what was not
queued; the job's own record says so too (`on_failure`), and nothing stored is lost.

**Leases.** A job with a "running" state (a `crm.models.LeasedJob`: an import, a workflow
run) is claimed with a fresh token and a lease of `JOB_LEASE_SECONDS`, which the worker
renews at each step of its work (`Lease.beat`, in autocommit so that others see it). A
worker killed with -9, or cut off from the database, stops renewing: once its lease has run
out the job is taken for dead — by the beat task `crm.expire_stale_jobs` every minute, and
whenever the job's page or API is read — and marked failed with a sentence saying so.
Resuming it queues it again, and a rerun of the job is idempotent. A worker that finds its
lease gone (it was too slow, was taken for dead and the job resumed elsewhere) stops at its
next step instead of racing the new one (`LeaseLost`).

A step must be shorter than the lease: the longest ones (an import's upsert of 100,000
rows, a workflow run's chunk of 50,000 ids) take seconds, against a default of 5 minutes.
The close of a billing period needs no lease: it is one transaction per period, so a
killed close leaves nothing behind and the hourly beat (or a retry) does it again.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.db import connections, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

logger = logging.getLogger(__name__)


class JobNotQueued(Exception):
    """The broker did not take the job. The message says what was not queued and what to do."""


def _not_queued(what: str, remedy: str, error: Exception) -> str:
    return (
        f"{what} could not be queued: the task queue (broker) is unreachable ({error}). "
        f"{remedy}".strip()
    )


def enqueue(
    task,
    *args,
    what: str = "",
    remedy: str = "",
    on_failure: Callable[[str], None] | None = None,
    embedded_thread: bool = True,
) -> None:
    """Run `task(*args)` in the background once the current transaction commits.

    When the broker is unreachable, `on_failure(message)` records it on the job (after the
    commit: the job's row is stored) and `JobNotQueued(message)` is raised to the caller.
    `embedded_thread=False` runs the task inline when there is no broker.
    """
    transaction.on_commit(
        lambda: _start(
            task,
            args,
            what=what or f"The job {task.name}",
            remedy=remedy,
            on_failure=on_failure,
            embedded_thread=embedded_thread,
        )
    )


def delay(task, *args, what: str, remedy: str = "", **kwargs):
    """`task.delay(*args, **kwargs)` now, with an unreachable broker as `JobNotQueued`."""
    try:
        return task.delay(*args, **kwargs)
    except BrokerError as error:
        logger.error("task %s not queued: %s", task.name, error)
        raise JobNotQueued(_not_queued(what, remedy, error)) from error


def _start(task, args: tuple, *, what, remedy, on_failure, embedded_thread) -> None:
    eager = settings.CELERY_TASK_ALWAYS_EAGER
    if eager and embedded_thread and getattr(settings, "EMBEDDED_BACKGROUND_JOBS", False):
        threading.Thread(
            target=_run_in_thread, args=(task, args), name=f"job:{task.name}", daemon=True
        ).start()
        return
    try:
        task.delay(*args)
    except BrokerError as error:
        message = _not_queued(what, remedy, error)
        logger.error("task %s%r not queued: %s", task.name, args, error)
        if on_failure is not None:
            on_failure(message)
        raise JobNotQueued(message) from error


def _run_in_thread(task, args: tuple) -> None:
    try:
        task.apply(args=args, throw=True)
    except Exception:  # the job records its own failure; the thread must not die noisily
        logger.exception("background job %s%r failed", task.name, args)
    finally:
        connections.close_all()  # this thread's own connections


class LeaseLost(Exception):
    """This worker's lease on the job is gone: another worker owns it, or it was failed."""


def lease_duration() -> dt.timedelta:
    return dt.timedelta(seconds=settings.JOB_LEASE_SECONDS)


def _no_live_lease(now: dt.datetime) -> Q:
    return Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)


@dataclass(frozen=True)
class Lease:
    """A worker's claim on one job row (see the module's docstring)."""

    model: type
    pk: int
    token: str

    def _mine(self) -> QuerySet:
        return self.model.objects.filter(pk=self.pk, lease_token=self.token)

    def beat(self, **fields) -> None:
        """Renew the lease, writing `fields` (progress) in the same statement. Call it
        outside the job's transactions, so others see it at once."""
        if not self._mine().update(lease_expires_at=timezone.now() + lease_duration(), **fields):
            raise LeaseLost(f"{self.model.LEASE_NOUN} #{self.pk}: this worker's lease is gone")

    def write(self, **fields) -> None:
        """Write `fields` only while the lease is ours (inside a step's transaction, its
        progress commits with its work, or not at all)."""
        if not self._mine().update(**fields):
            raise LeaseLost(f"{self.model.LEASE_NOUN} #{self.pk}: this worker's lease is gone")

    def release(self, **fields) -> bool:
        """The job ends (done, held, failed): write `fields` and give the lease up. False
        when the lease was lost meanwhile (nothing is written)."""
        return bool(self._mine().update(lease_token="", lease_expires_at=None, **fields))


def lease_claim(model, pk: int, *, statuses: list[str], **fields) -> Lease | None:
    """Claim job `pk` of `model` if it is in one of `statuses` and no live lease holds it,
    writing `fields` (its running status) with a fresh lease. None when it is not
    claimable: finished already, or another worker is on it."""
    now = timezone.now()
    token = uuid.uuid4().hex
    claimed = model.objects.filter(_no_live_lease(now), pk=pk, status__in=statuses).update(
        lease_token=token, lease_expires_at=now + lease_duration(), **fields
    )
    return Lease(model, pk, token) if claimed else None


def leased_models() -> list[type]:
    from crm.models import LeasedJob

    return [model for model in apps.get_models() if issubclass(model, LeasedJob)]


def jobs_expire_stale(*, model=None, pk=None, now: dt.datetime | None = None) -> int:
    """Fail the running jobs whose lease has run out (of `model`, or of every leased
    model; only `pk` if given); return how many. Each row is failed by one conditional
    UPDATE, so a worker that renewed meanwhile keeps its job."""
    now = now or timezone.now()
    failed = 0
    for job_model in [model] if model is not None else leased_models():
        stale = job_model.objects.filter(_no_live_lease(now), status=job_model.LEASE_RUNNING)
        if pk is not None:
            stale = stale.filter(pk=pk)
        for job_pk, expired_at in stale.values_list("pk", "lease_expires_at"):
            if job_model.objects.filter(
                _no_live_lease(now), pk=job_pk, status=job_model.LEASE_RUNNING
            ).update(
                status=job_model.LEASE_FAILED,
                lease_token="",
                lease_expires_at=None,
                finished_at=now,
                **{job_model.LEASE_MESSAGE_FIELD: _lease_lost_message(job_model, expired_at)},
            ):
                failed += 1
                logger.warning("%s #%s: its worker stopped; failed", job_model.LEASE_NOUN, job_pk)
    return failed


def _lease_lost_message(model, expired_at: dt.datetime | None) -> str:
    since = f" at {expired_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC" if expired_at else ""
    return (
        f"The worker running this {model.LEASE_NOUN} stopped: its lease ran out{since} "
        "(the worker was killed, or lost the database). Resume it to finish: what it "
        "saved is kept and is not done twice."
    )
