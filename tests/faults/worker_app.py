"""The project's Celery app, as the fault tests' worker runs it.

`celery -A tests.faults.worker_app worker` is `celery -A crm worker` (the same app, tasks
and settings) with three test-only knobs read from the environment, so that a job has
several steps and a test can kill its worker in the middle of one:

* FAULTS_IMPORT_BATCH, FAULTS_WORKFLOW_BATCH: smaller upsert chunks and run chunks;
* FAULTS_STEP_PAUSE (seconds): a pause after each heartbeat of a job (between two chunks),
  and inside each period's transaction of the close, after its rollover;
* FAULTS_QUEUE: the queue this worker serves (the test's own), also its default queue.
"""

import os
import time

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings.production")
django.setup()

from billing import services as billing_services  # noqa: E402
from contacts.imports import services as import_services  # noqa: E402
from crm import jobs  # noqa: E402
from crm.celery import app  # noqa: E402
from workflows import runs  # noqa: E402

import_services.IMPORT_UPSERT_BATCH = int(
    os.environ.get("FAULTS_IMPORT_BATCH", import_services.IMPORT_UPSERT_BATCH)
)
import_services.IMPORT_PORTABLE_BATCH = import_services.IMPORT_UPSERT_BATCH
runs.WORKFLOW_RANGE_BATCH = int(os.environ.get("FAULTS_WORKFLOW_BATCH", runs.WORKFLOW_RANGE_BATCH))
PAUSE = float(os.environ.get("FAULTS_STEP_PAUSE", "0"))

if PAUSE:
    _beat = jobs.Lease.beat
    _rollover = billing_services.contacts_rollover

    def beat_then_pause(lease, **fields):
        _beat(lease, **fields)
        time.sleep(PAUSE)

    def rollover_then_pause(**kwargs):
        result = _rollover(**kwargs)
        time.sleep(PAUSE)
        return result

    jobs.Lease.beat = beat_then_pause
    billing_services.contacts_rollover = rollover_then_pause

app.conf.task_default_queue = os.environ["FAULTS_QUEUE"]

__all__ = ["app"]
