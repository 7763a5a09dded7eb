"""Starting background jobs (imports, marketing email sends) after the transaction commits.

With a broker, a job is a Celery task on a worker. The embedded default has no broker
and runs tasks eagerly; a long job run eagerly inside the request that starts it would
hold the page until it ends, so nobody could watch its progress. There, with
`EMBEDDED_BACKGROUND_JOBS` (on by default, off in tests), the job runs in a thread of
this process instead: the page returns at once and the job's progress shows on the
next request. A job interrupted with the process is resumable: its task is idempotent.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import connections, transaction

logger = logging.getLogger(__name__)


def enqueue(task, *args) -> None:
    """Run `task(*args)` in the background once the current transaction commits."""
    transaction.on_commit(lambda: _start(task, args))


def _start(task, args: tuple) -> None:
    if settings.CELERY_TASK_ALWAYS_EAGER and getattr(settings, "EMBEDDED_BACKGROUND_JOBS", False):
        threading.Thread(
            target=_run_in_thread, args=(task, args), name=f"job:{task.name}", daemon=True
        ).start()
    else:
        task.delay(*args)


def _run_in_thread(task, args: tuple) -> None:
    try:
        task.apply(args=args, throw=True)
    except Exception:  # the job records its own failure; the thread must not die noisily
        logger.exception("background job %s%r failed", task.name, args)
    finally:
        connections.close_all()  # this thread's own connections
