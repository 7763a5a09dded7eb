"""`/health/`: is this web process able to serve? For load balancers and orchestrators.

No authentication, no session, no template: a probe must get an answer even when the
admin is broken. Two checks, each bounded in time:

* the database: `SELECT 1` on the default connection;
* the broker (Celery's, Redis or RabbitMQ): a kombu connection opened with a
  `HEALTH_BROKER_TIMEOUT` (2 s) connect timeout and no retry. The embedded default has no
  broker (tasks run in-process), which the answer reports as "not used" — not a failure.

200 when every check passes, 503 otherwise; the JSON body says which check failed and why
(the error's own sentence), so a person reading the probe's log knows where to look:

    {"status": "unavailable",
     "checks": {"database": {"ok": true},
                "broker": {"ok": false, "error": "Error 111 connecting to …"}}}
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)

DEFAULT_BROKER_TIMEOUT = 2.0  # seconds: a probe answers well within its own timeout


def check_database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure is the answer, never a 500
        logger.warning("health: the database did not answer: %s", exc)
        return {"ok": False, "error": f"The database did not answer: {exc}"}
    return {"ok": True}


def check_broker() -> dict:
    url = getattr(settings, "CELERY_BROKER_URL", "")
    if not url or getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):
        return {"ok": True, "detail": "not used: tasks run in this process"}
    from kombu import Connection

    timeout = float(getattr(settings, "HEALTH_BROKER_TIMEOUT", DEFAULT_BROKER_TIMEOUT))
    try:
        with Connection(
            url,
            connect_timeout=timeout,
            transport_options={"socket_timeout": timeout, "max_retries": 0},
        ) as broker:
            broker.ensure_connection(max_retries=0, timeout=timeout)
    except Exception as exc:  # any failure is the answer, never a 500
        logger.warning("health: the broker did not answer: %s", exc)
        return {"ok": False, "error": f"The task queue (broker) did not answer: {exc}"}
    return {"ok": True}


@never_cache
@require_GET
def health(request):
    checks = {"database": check_database(), "broker": check_broker()}
    healthy = all(check["ok"] for check in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )
