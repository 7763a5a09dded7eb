"""Gunicorn's configuration for `make serve-prod` (`gunicorn -c crm/gunicorn.py crm.wsgi`).

Everything comes from the environment, with defaults sized for a small host:

| variable | default | meaning |
|---|---|---|
| `BIND` | `127.0.0.1:8000` | address and port (`0.0.0.0:8000` behind a load balancer) |
| `WEB_CONCURRENCY` | 2 × CPUs + 1 | worker processes |
| `GUNICORN_THREADS` | 4 | threads per worker (the `gthread` worker) |
| `GUNICORN_TIMEOUT` | 60 | seconds a request may take before its worker is restarted |
| `GUNICORN_MAX_REQUESTS` | 2000 | requests a worker serves before it is replaced (with jitter) |

Each thread holds its own database connection: workers × threads must stay under
PostgreSQL's `max_connections` (100 by default) with the Celery workers' connections.

With several workers, Prometheus's counters are kept per process in
`PROMETHEUS_MULTIPROC_DIR` (crm/metrics.py); a worker that exits is marked dead there so
its gauges leave the sum.
"""

import gc
import multiprocessing
import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY") or multiprocessing.cpu_count() * 2 + 1)
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 30
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "2000"))
max_requests_jitter = max_requests // 10
accesslog = "-"
errorlog = "-"
# Behind a proxy on another host, list its address in FORWARDED_ALLOW_IPS (gunicorn reads it).


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """The application is loaded: its modules, URL patterns, models and settings live as
    long as the worker. Python's cycle collector would walk every one of them again at
    each full collection (crm/collector.py) and never free any, so they are moved out of
    its reach; each request's own objects are collected as before."""
    gc.freeze()
