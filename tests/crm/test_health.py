"""/health/: 200 when the database and the broker answer, 503 naming what did not."""

import pytest
from django.db import OperationalError
from django.test import Client

from tests.contacts.test_worker import redis_up

HEALTH = "/health/"


@pytest.fixture
def anonymous():
    return Client()


def test_embedded_default_is_healthy_and_says_the_broker_is_not_used(db, anonymous):
    response = anonymous.get(HEALTH)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["broker"]["ok"] is True
    assert "not used" in body["checks"]["broker"]["detail"]
    assert "no-cache" in response["Cache-Control"]


def test_a_broker_that_does_not_answer_is_503_with_the_reason(db, anonymous, settings):
    # Port 1 on the loopback: nothing listens there, the connection is refused at once.
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    settings.CELERY_TASK_ALWAYS_EAGER = False

    response = anonymous.get(HEALTH)

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["broker"]["ok"] is False
    assert body["checks"]["broker"]["error"].startswith("The task queue (broker) did not answer")
    assert "127.0.0.1:1" in body["checks"]["broker"]["error"]


def test_a_database_that_does_not_answer_is_503_with_the_reason(db, anonymous, monkeypatch):
    from crm import health

    class DownConnection:
        def cursor(self):
            raise OperationalError("connection to server at 127.0.0.1 refused")

    monkeypatch.setattr(health, "connection", DownConnection())

    response = anonymous.get(HEALTH)

    assert response.status_code == 503
    body = response.json()
    assert body["checks"]["database"]["ok"] is False
    assert "connection to server at 127.0.0.1 refused" in body["checks"]["database"]["error"]
    assert body["checks"]["broker"]["ok"] is True


@pytest.mark.skipif(not redis_up(), reason="Redis is not running on 127.0.0.1:6379")
def test_a_redis_broker_that_answers_is_healthy(db, anonymous, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:6379/0"
    settings.CELERY_TASK_ALWAYS_EAGER = False

    response = anonymous.get(HEALTH)

    assert response.status_code == 200
    assert response.json()["checks"]["broker"] == {"ok": True}


def test_only_get(db, anonymous):
    assert anonymous.post(HEALTH).status_code == 405
