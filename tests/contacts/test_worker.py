"""One task through a real Celery worker and a real Redis broker (skipped when Redis is down)."""

import pytest
import redis
from celery.contrib.testing.worker import start_worker

from contacts.models import Contact, StatusChange
from contacts.services import contacts_set_marketing, contacts_set_non_marketing
from contacts.tasks import apply_due_downgrades
from crm.celery import app
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
    app.conf.update(broker_url=BROKER, result_backend=BROKER, task_always_eager=False)
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
            result = apply_due_downgrades.delay().get(timeout=30)
    finally:
        app.conf.update(broker_url="", result_backend=None, task_always_eager=True)

    assert result["applied"] == 1
    assert Contact.objects.get().marketing_status == "non_marketing"
    assert StatusChange.objects.filter(action="rollover").count() == 1
