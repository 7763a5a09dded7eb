"""Prometheus metrics at `/metrics`, for staff or a scraper holding `METRICS_TOKEN`.

What is exported:
* django-prometheus's request, response and latency metrics (its two middlewares wrap
  the others in settings.MIDDLEWARE);
* `marketable_job_duration_seconds{job, outcome}`: every Celery task (imports, workflow
  runs, closes, scores…), timed from the worker's (or, embedded, the web process's)
  task_prerun to task_postrun signals;
* what the apps register here, collected when scraped: contacts registers the status
  changes by ledger action and the live and peak marketing counts of the current period
  (contacts/status/metrics.py). `crm` imports no app; apps call `register_scrape_collector`
  from their AppConfig.ready().

Several processes (gunicorn workers, Celery workers): set `PROMETHEUS_MULTIPROC_DIR` to an
empty directory shared by the processes of one host before they start (`make serve-prod`
does); counters and histograms are then summed over the processes at each scrape.
Collected-on-scrape values are read by the process that answers the scrape.

Access: a staff user's session, or `Authorization: Bearer <METRICS_TOKEN>` (compared in
constant time). Without credentials the admin login page is offered, as for any staff
page; a wrong token is a 401, a signed-in user who is not staff a 403.
"""

from __future__ import annotations

import hmac
import os
import time

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Histogram,
    generate_latest,
)

JOB_DURATION = Histogram(
    "marketable_job_duration_seconds",
    "How long each background job (Celery task) ran, by task name and outcome.",
    ["job", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)

_scrape_collectors: list = []
_started: dict[str, float] = {}


def register_scrape_collector(collector) -> None:
    """A prometheus_client collector (an object with `collect()`) whose metrics are read
    when /metrics is scraped."""
    if collector not in _scrape_collectors:
        _scrape_collectors.append(collector)


def job_started(task_id=None, **kwargs) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


def job_finished(task_id=None, task=None, state=None, **kwargs) -> None:
    started = _started.pop(task_id, None) if task_id else None
    if started is None or task is None:
        return
    outcome = "success" if state == "SUCCESS" else (state or "unknown").lower()
    JOB_DURATION.labels(job=task.name, outcome=outcome).observe(time.perf_counter() - started)


def connect_job_signals() -> None:
    from celery import signals

    signals.task_prerun.connect(job_started, dispatch_uid="crm.metrics.job_started")
    signals.task_postrun.connect(job_finished, dispatch_uid="crm.metrics.job_finished")


def metrics_text() -> bytes:
    """The exposition: the process-wide registry (or, with several processes, their sum)
    followed by the metrics collected now."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    scraped = CollectorRegistry(auto_describe=False)
    for collector in _scrape_collectors:
        scraped.register(collector)
    return generate_latest(registry) + generate_latest(scraped)


def _token_matches(request) -> bool | None:
    """True or False when a bearer token was sent, None when none was."""
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    expected = getattr(settings, "METRICS_TOKEN", "")
    if scheme.lower() != "bearer" or not expected:
        return False
    return hmac.compare_digest(token.strip().encode(), expected.encode())


@never_cache
@require_GET
def metrics(request):
    token = _token_matches(request)
    if token is False:
        return HttpResponse(
            "The metrics token is wrong (send Authorization: Bearer <METRICS_TOKEN>).\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
    if token is None:
        user = request.user
        if not user.is_authenticated:
            return redirect_to_login(request.get_full_path(), "admin:login")
        if not (user.is_active and user.is_staff):
            return HttpResponse(
                "Metrics are for staff users and the metrics scraper only.\n",
                status=403,
                content_type="text/plain; charset=utf-8",
            )
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_LATEST)
