"""The real-worker and fault suites: real `celery worker` processes on Redis and on the test
session's PostgreSQL database, started, stopped and killed (-9) by the tests.

Tests marked `worker` run only with WORKER_TESTS=1 (`make test-faults`, CI), on PostgreSQL,
with Redis on 127.0.0.1:6379. They use Redis database 5 and a queue of their own, so they
cannot take another run's tasks, and their data is committed (`transaction=True`): the
worker is another process and sees only what is committed.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from django.db import connection
from rest_framework.test import APIClient

from tests.celery_worker import celery_worker_argv
from tests.factories import UserFactory

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/5"
ENABLED = os.environ.get("WORKER_TESTS") == "1"
QUEUE = f"faults-{os.getpid()}-{uuid.uuid4().hex[:6]}"
DEADLINE = 90  # seconds a wait gives up after: a hung worker fails the test, never hangs it


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(
        reason="needs a real Celery worker on Redis and PostgreSQL: WORKER_TESTS=1 "
        "(make test-faults)"
    )
    for item in items:
        if "worker" in item.keywords and not ENABLED:
            item.add_marker(skip)


def wait_for(condition, what: str, worker: Worker | None = None):
    """Poll `condition()` until it returns something truthy; fail after DEADLINE seconds."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    log = worker.log_tail() if worker else ""
    pytest.fail(f"gave up waiting for {what}\n{log}")


def database_url(application_name: str) -> str:
    """The test session's database, as the worker reaches it."""
    db = connection.settings_dict
    user = quote(db["USER"] or "")
    password = f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else ""
    return (
        f"postgres://{user}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/"
        f"{db['NAME']}?application_name={application_name}"
    )


class Worker:
    """One `celery -A tests.faults.worker_app worker` process: the project's app, serving and
    sending to this suite's queue (a task that queues others, such as a shared run, keeps
    them here); given test knobs (FAULTS_…), with smaller, slower steps."""

    def __init__(self, log_dir: Path, media_root: Path, **knobs: str):
        app = "tests.faults.worker_app"
        self.name = f"faults-worker-{uuid.uuid4().hex[:8]}"
        self.log_path = log_dir / f"{self.name}.log"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "DJANGO_SETTINGS_MODULE": "crm.settings.production",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": database_url(self.name),
            "CELERY_BROKER_URL": REDIS_URL,
            "MEDIA_ROOT": str(media_root),
            "FAULTS_QUEUE": QUEUE,
            "LOG_LEVEL": "INFO",
            **knobs,
        }
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                celery_worker_argv(app=app, hostname=self.name, queue=QUEUE),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as a whole
            )
        wait_for(self.ready, f"worker {self.name} to start", self)

    def ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"worker {self.name} exited ({self.process.returncode})\n{self.log_tail()}")
        return " ready." in self.log_path.read_text()

    def received(self, task: str) -> int:
        """How many `task` messages this worker took ("received" is logged before the task
        runs, so it counts one whose "succeeded" line is not written yet)."""
        return sum(
            f"{task}[" in line and " received" in line
            for line in self.log_path.read_text().splitlines()
        )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def kill(self) -> None:
        """kill -9: no shutdown, no cleanup, the job stops wherever it is."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # a warm shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def in_transaction(self) -> bool:
        """This worker's database session is inside a transaction that has written."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
                "AND state LIKE 'idle in transaction%%' AND backend_xid IS NOT NULL",
                [self.name],
            )
            return cursor.fetchone() is not None


@pytest.fixture
def root(db):
    """A superuser: role groups come from migrations, and a transactional test flushes them."""
    return UserFactory(username="root", is_superuser=True)


@pytest.fixture
def api(root):
    client = APIClient()
    client.force_authenticate(root)
    return client


@pytest.fixture(scope="session")
def media_root(tmp_path_factory):
    return tmp_path_factory.mktemp("faults-media")


@pytest.fixture
def workers(request, media_root, settings, tmp_path):
    """`start(**knobs)` a worker; every worker started is stopped (or was killed) after."""
    if not ENABLED:
        pytest.skip("WORKER_TESTS=1 is not set")
    assert connection.vendor == "postgresql", "the worker suites need DATABASE_URL=postgres://…"
    settings.MEDIA_ROOT = media_root
    redis.Redis.from_url(REDIS_URL).flushdb()  # database 5 is this suite's own
    started: list[Worker] = []

    def start(**knobs) -> Worker:
        worker = Worker(tmp_path, media_root, **{k: str(v) for k, v in knobs.items()})
        started.append(worker)
        return worker

    with web_broker(settings, REDIS_URL):
        yield start
    for worker in started:
        worker.stop()
    connection.close()  # the flush after the test must not wait on our own session
    redis.Redis.from_url(REDIS_URL).flushdb()


@contextmanager
def web_broker(settings, url: str):
    """This process (the web side) enqueues to `url` on this suite's queue, as production does.

    The project's app is made the current one: the tasks are shared tasks, sent through the
    current app, and a test that starts an in-process worker leaves its own app current.
    """
    from celery._state import get_current_app

    from crm.celery import app

    previous = get_current_app()
    saved = {
        name: app.conf[name] for name in ("broker_url", "task_always_eager", "task_default_queue")
    }
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.update(broker_url=url, task_always_eager=False, task_default_queue=QUEUE)
    app.set_current()
    _forget_connections(app)
    try:
        yield
    finally:
        app.conf.update(saved)
        _forget_connections(app)
        previous.set_current()


def _forget_connections(app) -> None:
    """Drop the cached broker connections (the app's and kombu's), made for another URL."""
    import kombu.pools

    app._pool = None
    app.amqp._producer_pool = None
    kombu.pools.reset()
