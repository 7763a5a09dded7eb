"""The project's Celery app, as the fault tests' worker runs it.

`celery -A tests.faults.worker_app worker` is `celery -A crm worker` (the same app, tasks
and settings) with three test-only knobs read from the environment, so that a job has
several steps and a test can kill its worker in the middle of one:

* FAULTS_IMPORT_BATCH, FAULTS_WORKFLOW_BATCH, FAULTS_SCORE_CHUNK: smaller upsert chunks,
  run chunks and lead-score recompute chunks;
* FAULTS_STEP_PAUSE (seconds): a pause after each heartbeat of a job (between two chunks),
  inside each period's transaction of the close, after its replay, and before each chunk
  of the lead-score recompute;
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
from workflows import runs, scoring  # noqa: E402

import_services.IMPORT_UPSERT_BATCH = int(
    os.environ.get("FAULTS_IMPORT_BATCH", import_services.IMPORT_UPSERT_BATCH)
)
import_services.IMPORT_PORTABLE_BATCH = import_services.IMPORT_UPSERT_BATCH
runs.WORKFLOW_RANGE_BATCH = int(os.environ.get("FAULTS_WORKFLOW_BATCH", runs.WORKFLOW_RANGE_BATCH))
scoring.SCORE_RECOMPUTE_CHUNK = int(
    os.environ.get("FAULTS_SCORE_CHUNK", scoring.SCORE_RECOMPUTE_CHUNK)
)
PAUSE = float(os.environ.get("FAULTS_STEP_PAUSE", "0"))

if PAUSE:
    _beat = jobs.Lease.beat
    _replay = billing_services.ledger_replay

    def beat_then_pause(lease, **fields):
        _beat(lease, **fields)
        time.sleep(PAUSE)

    def replay_then_pause(**kwargs):
        result = _replay(**kwargs)
        time.sleep(PAUSE)
        return result

    _score_range = scoring.scores_recompute_range

    def pause_then_score_range(**kwargs):
        time.sleep(PAUSE)
        return _score_range(**kwargs)

    jobs.Lease.beat = beat_then_pause
    billing_services.ledger_replay = replay_then_pause
    scoring.scores_recompute_range = pause_then_score_range

app.conf.task_default_queue = os.environ["FAULTS_QUEUE"]

__all__ = ["app"]
