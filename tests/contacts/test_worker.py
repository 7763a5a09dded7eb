"""One task through a real Celery worker and a real Redis broker (skipped when Redis is down)."""

import time

import pytest
import redis
from celery import Celery
from celery._state import get_current_app
from celery.contrib.testing.worker import start_worker

from contacts.models import Contact
from contacts.status.models import StatusChange
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from contacts.tasks import apply_due_downgrades
from tests.conftest import at

BROKER = "redis://127.0.0.1:6379/15"


def redis_up() -> bool:
    try:
        return redis.Redis.from_url(BROKER, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        return False


@pytest.mark.postgres  # the worker thread needs its own connection to a real database
@pytest.mark.skipif(not redis_up(), reason="Redis is not running on 127.0.0.1:6379")
def test_a_real_worker_applies_due_downgrades(transactional_db, account, contact_factory, manual):
    contact = contact_factory()
    contacts_set_marketing(contacts=contact, source=manual, at=at(2025, 1, 5))
    contacts_set_non_marketing(contacts=contact, source=manual, at=at(2025, 1, 6))
    # A fresh app: the project's app has cached its eager, broker-less configuration.
    # Creating an app, and starting a worker on it, makes it the current and the default app
    # (the one other threads see), which every task then sends through: put the project's
    # back afterwards, or later tests would send to this worker's closed pool.
    previous = get_current_app()
    app = Celery("worker-test")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.update(broker_url=BROKER, task_always_eager=False)

    try:
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
            app.send_task(apply_due_downgrades.name)
            deadline = time.monotonic() + 30  # waits for the worker; asserts nothing about speed
            while (
                time.monotonic() < deadline
                and not StatusChange.objects.filter(action="rollover").exists()
            ):
                time.sleep(0.1)
    finally:
        previous.set_default()
        previous.set_current()

    assert Contact.objects.get().marketing_status == "non_marketing"
    assert StatusChange.objects.filter(action="rollover").count() == 1
