"""The command line of a real Celery worker process, shared by the faults suite and the
benchmark: one solo process (one task at a time), no gossip, mingle or heartbeat between
workers, INFO logging (the tests read its "received" and "ready." lines)."""

from __future__ import annotations

import sys


def celery_worker_argv(*, app: str, hostname: str, queue: str | None = None) -> list[str]:
    queues = ["--queues", queue] if queue else []
    return [
        sys.executable, "-m", "celery", "-A", app, "worker", "--pool=solo", *queues,
        "--hostname", f"{hostname}@%h", "--without-gossip", "--without-mingle",
        "--without-heartbeat", "--loglevel", "INFO",
    ]  # fmt: skip
