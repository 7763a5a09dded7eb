"""n. The lead-score recompute, workflow runs and imports shared by Celery workers (`--only
workers`; not in the full run).

`python -m tests.perf.run --only workers [--contacts N] [--repeat R]` (PostgreSQL, and
Redis on 127.0.0.1:6379). In one run:

- data: N contacts (tests/perf/data.py's fill) and EVENTS_PER_CONTACT × N engagement events,
  seeded with one INSERT … SELECT (not through ingestion: the events are the recompute's
  input, not what is measured): each event's contact drawn at random (seeded), so about
  one contact in seven has none; its type cycling over every engagement type; its age
  spread over 60 days. The scoring rules are engagement.py's (a plain rule for every type,
  a windowed and a decaying one);
- before every timed run the same stale state: the scores are the recompute's, then every
  second contact's is off by one (a stale half to rewrite), VACUUM ANALYZE, CHECKPOINT;
- contenders, each scoring at the same frozen instant, alternating, the median of `--repeat`:
  * one process: `scores_recompute` in this process (what the command runs);
  * 1 worker: the task `workflows.recompute_scores` queued on Redis, run by one real
    `celery worker` process (solo pool: concurrency 1): the coordinator splits the work,
    the chunk tasks follow one another, the chord sums them;
  * 2 workers: the same with two worker processes sharing the chunks;
  timed end to end, from the enqueue to the chord's result read back from Redis;
- after every run the scores' digest equals the one-process run's.

Before the recompute, on the same data and workers, two workflow runs over the whole table,
each timed the same three ways (in this process as `run_workflows` does, range after
range; queued as the API queues it and shared by 1 worker, then by 2), from the request
to the run's row saying done, alternating, the median of `--repeat`:

- "Leads get a lead status": the leads (three in ten) enrolled and their lead status set,
  to the other of two values each time, so every lead's row is rewritten every run; the
  enrollments and runs truncated, VACUUM ANALYZE and CHECKPOINT before each;
- "MQLs are marketing contacts": the MQLs (one in ten) made marketing through the status
  service; before each, every contact non-marketing again and the ledger and counters
  emptied (section i.'s reset).

Every run of a workflow must give the same counts, or the benchmark fails.

Last (it empties the tables), an import of a CSV of N new contacts (section g.'s file), timed
the same three ways from the job's start to the import's row saying done (the upload,
preview and commit before it untimed): in this process as `import_contacts` runs it, chunk
after chunk; queued as the API queues it, its upsert's chunks shared by 1 worker, then by
2. Every run must create N contacts.

The workers use Redis database REDIS_DB, flushed before and after, so no other queue or
worker can take or add a task; they are stopped at the end, whatever happens.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import secrets
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from django.conf import settings
from django.db import connection, transaction

from contacts.demo.load import indexes_deferred
from contacts.engagement.models import EngagementEvent, EngagementType
from tests.celery_worker import celery_worker_argv
from tests.perf import data
from tests.perf.workflows import ENROLLMENT, RUN

REDIS_DB = 11  # the benchmark's own Redis database (the fault tests use 5, throttling 7)
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
EVENTS_PER_CONTACT = 2
NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
T = TypeVar("T")
START_SECONDS = 90  # a worker that is not ready by then fails the benchmark
RESULT_SECONDS = 1800  # nor a recompute that has not ended by then
EVENT = EngagementEvent._meta.db_table
ROOT = Path(__file__).resolve().parents[2]


def seed_events(contacts: int) -> int:
    """EVENTS_PER_CONTACT × `contacts` events, seeded with SQL (see the module's docstring)."""
    types = "ARRAY[" + ", ".join(f"'{value}'" for value in EngagementType.values) + "]"
    count = EVENTS_PER_CONTACT * contacts
    data.execute(f"TRUNCATE {EVENT} RESTART IDENTITY")
    with transaction.atomic(), indexes_deferred([EVENT]):
        data.execute("SELECT setseed(0.2026)")
        data.execute(
            f"""
            INSERT INTO {EVENT} (contact_id, type, occurred_at, external_id, properties,
                                 created_at)
            SELECT 1 + floor(random() * %s)::int, ({types})[g %% {len(EngagementType.values)} + 1],
                   %s - random() * interval '60 days', NULL, '{{}}'::jsonb, %s
            FROM generate_series(1, %s) AS g
            """,
            params=[contacts, NOW, NOW, count],
        )
    data.execute(f"VACUUM ANALYZE {EVENT}")
    return count


def digest() -> str:
    """Every contact's score, in id order, as one md5: equal digests, identical scores."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT md5(string_agg(lead_score::text, ',' ORDER BY id)) FROM {data.CONTACT}"
        )
        return cursor.fetchone()[0]


def make_stale() -> None:
    """The same state before every timed run: every second contact's score off by one (the
    scores are the recompute's after every run, so this state is always the same)."""
    data.execute(f"UPDATE {data.CONTACT} SET lead_score = lead_score + 1 WHERE id % 2 = 0")
    data.execute(f"VACUUM ANALYZE {data.CONTACT}")
    data.checkpoint()


# --- real workers ------------------------------------------------------------------------


class Worker:
    """One `celery -A crm worker --pool=solo` process (concurrency 1) on REDIS_URL, with the
    production settings and the benchmark's database."""

    def __init__(self, log_dir: Path, name: str):
        db = connection.settings_dict
        password = f":{quote(db['PASSWORD'])}" if db["PASSWORD"] else ""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/"),
            "DJANGO_SETTINGS_MODULE": "crm.settings.production",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": f"postgres://{quote(db['USER'] or '')}{password}@"
            f"{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
            "CELERY_BROKER_URL": REDIS_URL,
            "LOG_LEVEL": "WARNING",
        }
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                celery_worker_argv(app="crm", hostname=name),
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        deadline = time.monotonic() + START_SECONDS
        while " ready." not in self.log_path.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"worker {name} did not start:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])

    def chunks_taken(self, task: str) -> int:
        # "received", logged before the chunk runs: its "succeeded" line may come after the
        # chord's total has been read
        return sum(
            f"{task}[" in line and " received" in line
            for line in self.log_path.read_text().splitlines()
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # a warm shutdown
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)


@contextmanager
def sending_to_workers():
    """This process queues to REDIS_URL (its settings run tasks eagerly) and reads results
    from it; Redis database REDIS_DB is flushed before and after."""
    import kombu.pools
    import redis
    from celery.backends.redis import RedisBackend

    from crm.celery import app

    redis.Redis.from_url(REDIS_URL).flushdb()
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.update(broker_url=REDIS_URL, task_always_eager=False)
    app._pool = None  # the broker connections cached for the eager configuration
    app.amqp._producer_pool = None
    kombu.pools.reset()
    try:
        yield RedisBackend(app=app, url=REDIS_URL)
    finally:
        redis.Redis.from_url(REDIS_URL).flushdb()


def shared_recompute(backend) -> dict:
    """Queue the recompute as the beat does (at the frozen instant) and wait for the total."""
    from celery.result import AsyncResult

    from crm.celery import app
    from workflows.tasks import recompute_scores

    started = time.perf_counter()
    queued = recompute_scores.delay(now=NOW.isoformat())
    total = AsyncResult(queued.id, app=app, backend=backend).get(timeout=RESULT_SECONDS)
    return {**total, "wall": time.perf_counter() - started}


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


@dataclass
class Fleet:
    """The benchmark's first worker, and how to start more for one timed run."""

    start: Callable[[str], Worker]
    first: Worker

    def work(self, count: int, task: str, work: Callable[[], T]) -> tuple[T, list[int]]:
        """`work()` with `count` workers up (the first, and `count - 1` started for it and
        stopped after); its result, and how many `task` messages each worker took."""
        extra = [self.start("bench-extra") for _ in range(count - 1)]
        fleet = (self.first, *extra)
        before = [worker.chunks_taken(task) for worker in fleet]
        try:
            outcome = work()
        finally:
            taken = [w.chunks_taken(task) - b for w, b in zip(fleet, before, strict=True)]
            for worker in extra:
                worker.stop()
        return outcome, taken


def alternating(
    options,
    say,
    label: str,
    one_process: Callable[[], float],
    on_workers: Callable[[int], float],
    *,
    before: Callable[[], None],
    after: Callable[[str], str] = lambda name: "",
) -> dict[str, list[float]]:
    """The three contenders — `one_process()`, `on_workers(1)`, `on_workers(2)`, each
    returning its seconds — `--repeat` times, in the reverse order every other round;
    `before()` sets the state each run starts from, `after(name)` checks the run and says
    what it gave. Each contender's seconds."""
    contenders = {
        "one_process": one_process,
        "one_worker": lambda: on_workers(1),
        "two_workers": lambda: on_workers(2),
    }
    runs: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(options.repeat):
        order = list(contenders) if round_ % 2 == 0 else list(contenders)[::-1]
        for name in order:
            before()
            say(f"n: {label}, {name}, {round_ + 1} of {options.repeat} (load {load()})")
            seconds = contenders[name]()
            runs[name].append(seconds)
            say(f"     {seconds:.2f} s{after(name)}")
    return runs


def ended(model, pk: int):
    """Job `pk` of `model` (a run, an import) once its row says it is no longer queued or
    running, read every 20 ms."""
    deadline = time.monotonic() + RESULT_SECONDS
    while True:
        job = model.objects.get(pk=pk)
        if job.status not in ("queued", "running"):
            return job
        if time.monotonic() > deadline:
            raise RuntimeError(f"{model.LEASE_NOUN} #{pk} has not ended in {RESULT_SECONDS} s")
        time.sleep(0.02)


# --- workflow runs ---------------------------------------------------------------------

# The two runs shared by the workers: one whose actions are not status changes (its ranges
# can run side by side), one that makes contacts marketing (each range holds the usage lock).
LEAD_STATUSES = ["open", "in_progress"]  # the property run sets them in turn


def property_workflow():
    """ "Leads get a lead status": the leads (three in ten contacts) enrolled and their lead
    status set; each timed run sets the other of LEAD_STATUSES, so every lead's row is
    rewritten every time."""
    from workflows.services import workflow_create

    return workflow_create(
        name="Leads get a lead status (bench)",
        purpose="other",
        enabled=True,
        criteria=_stage_is("lead"),
        actions=[{"type": "set_property", "field": "lead_status", "value": LEAD_STATUSES[0]}],
    )


def marketing_workflow():
    """ "MQLs are marketing contacts": the MQLs (one contact in ten) made marketing, guardrails
    off (the runs measure the work, not a hold)."""
    from tests.factories import set_guardrails
    from workflows.services import workflow_create

    set_guardrails(hard_cap=None, operation_limit=None)
    return workflow_create(
        name="MQLs are marketing contacts (bench)",
        purpose="enrollment",
        enabled=True,
        criteria=_stage_is(data.BULK_STAGE),
        actions=[{"type": "set_marketing"}],
        max_new_marketing=10_000_000,
    )


def _stage_is(stage: str) -> dict:
    return {
        "filterGroups": [
            {"filters": [{"propertyName": "lifecycle_stage", "operator": "IN", "values": [stage]}]}
        ]
    }


def reset_property_run(workflow, turn: int) -> None:
    """No enrollment or run left, and the next value to set (every lead's differs from it)."""
    from workflows.models import Workflow

    data.execute(f"TRUNCATE {ENROLLMENT}, {RUN} RESTART IDENTITY CASCADE")
    value = LEAD_STATUSES[turn % 2]
    Workflow.objects.filter(pk=workflow.pk).update(
        actions=[{"type": "set_property", "field": "lead_status", "value": value}]
    )
    data.execute(f"VACUUM ANALYZE {data.CONTACT}")
    data.checkpoint()


def run_on_workers(workflow) -> tuple[float, dict]:
    """Queue a run as the API does and wait until the database says it is done."""
    from workflows.models import RunTrigger, WorkflowRun
    from workflows.runs import workflow_run_request
    from workflows.tasks import run_workflow

    started = time.perf_counter()
    run = workflow_run_request(workflow=workflow, trigger=RunTrigger.API, enqueue=False)
    run_workflow.delay(run.pk)
    run = ended(WorkflowRun, run.pk)
    wall = time.perf_counter() - started
    if run.status != "done":
        raise RuntimeError(f"run #{run.pk} ended {run.status}: {run.error or run.hold_reason}")
    return wall, run_counts(run)


def run_in_one_process(workflow) -> tuple[float, dict]:
    """The run in this process, range after range (what `run_workflows` does)."""
    from workflows.runs import workflow_run_now

    settings.WORKFLOW_RUNS_SHARED = False
    started = time.perf_counter()
    run = workflow_run_now(workflow=workflow)
    wall = time.perf_counter() - started
    if run.status != "done":
        raise RuntimeError(f"run #{run.pk} ended {run.status}: {run.error or run.hold_reason}")
    return wall, run_counts(run)


def run_counts(run) -> dict:
    return {"matched": run.matched, "enrolled": run.enrolled, "changed": run.changed}


def workflow_contest(options, say, fleet: Fleet, result: dict) -> None:
    """Each workflow run in one process, on 1 worker and on 2 (see the module's docstring)."""
    from tests.perf.workflows import _reset
    from workflows.runs import WORKFLOW_RANGE_BATCH

    result["workflow_runs"] = {"range": WORKFLOW_RANGE_BATCH}
    for name, make, reset in [
        ("property", property_workflow, reset_property_run),
        ("marketing", marketing_workflow, lambda _workflow, _turn: _reset()),
    ]:
        result["workflow_runs"][name] = _one_workflow(
            options, say, fleet, name=name, make=make, reset=reset
        )


def _one_workflow(options, say, fleet: Fleet, *, name, make, reset) -> dict:
    from workflows.models import Workflow

    Workflow.objects.all().delete()
    workflow = make()
    counts: list[dict] = []
    shares: list[list[int]] = []
    turns = itertools.count()

    def on_workers(count: int) -> float:
        (wall, outcome), taken = fleet.work(
            count, "workflows.run_workflow_chunk", lambda: run_on_workers(workflow)
        )
        counts.append(outcome)
        if count > 1:
            shares.append(taken)
        return wall

    def one_process() -> float:
        wall, outcome = run_in_one_process(workflow)
        counts.append(outcome)
        return wall

    reset(workflow, next(turns))
    say(f"n: the {name} run once, untimed (warms the tables)")
    one_process()
    runs = alternating(
        options,
        say,
        f"{name} run",
        one_process,
        on_workers,
        before=lambda: reset(workflow, next(turns)),
        after=lambda _name: f", {counts[-1]}",
    )
    if any(outcome != counts[0] for outcome in counts):
        raise AssertionError(f"the {name} runs' counts differ: {counts}")
    return {
        "runs": runs,
        "medians": {c: statistics.median(r) for c, r in runs.items()},
        "counts": counts[0],
        "shares": shares,
    }


# --- imports -------------------------------------------------------------------------------


def committed_import(path: Path):
    """The file uploaded, previewed and committed (untimed), its job not yet queued."""
    from django.core.files import File

    from contacts.imports.services import (
        contact_import_commit,
        contact_import_create,
        contact_import_preview,
    )

    with open(path, "rb") as handle:
        contact_import = contact_import_create(file=File(handle), file_name=path.name)
    contact_import = contact_import_preview(contact_import=contact_import)
    return contact_import_commit(contact_import=contact_import, enqueue=False)


def import_on_workers(path: Path) -> tuple[float, int]:
    """Queue the committed import's job as the API does; wait until its row says done."""
    from contacts.imports.models import ContactImport
    from contacts.tasks import run_contact_import

    contact_import = committed_import(path)
    started = time.perf_counter()
    run_contact_import.delay(contact_import.pk)
    contact_import = ended(ContactImport, contact_import.pk)
    wall = time.perf_counter() - started
    if contact_import.status != "done":
        raise RuntimeError(f"import #{contact_import.pk} ended {contact_import.status}")
    return wall, contact_import.created_count


def import_in_one_process(path: Path) -> tuple[float, int]:
    """The import's job in this process, chunk after chunk (what `import_contacts` does)."""
    from contacts.imports.services import contact_import_run

    settings.IMPORTS_SHARED = False
    contact_import = committed_import(path)
    started = time.perf_counter()
    contact_import = contact_import_run(contact_import_id=contact_import.pk)
    wall = time.perf_counter() - started
    if contact_import.status != "done":
        raise RuntimeError(f"import #{contact_import.pk} ended {contact_import.status}")
    return wall, contact_import.created_count


def import_contest(options, say, fleet: Fleet, result: dict) -> None:
    """A CSV of `--contacts` new contacts imported into empty tables in one process, on 1
    worker and on 2 (its upsert's chunks shared), alternating, the median of `--repeat`."""
    from contacts.imports.services import IMPORT_UPSERT_BATCH
    from tests.perf.imports import empty_tables, write_csv

    path = write_csv(options.contacts)
    created: set[int] = set()
    shares: list[list[int]] = []

    def on_workers(count: int) -> float:
        (wall, made), taken = fleet.work(
            count, "contacts.upsert_import_chunk", lambda: import_on_workers(path)
        )
        created.add(made)
        if count > 1:
            shares.append(taken)
        return wall

    def one_process() -> float:
        wall, made = import_in_one_process(path)
        created.add(made)
        return wall

    runs = alternating(
        options,
        say,
        "import",
        one_process,
        on_workers,
        before=empty_tables,
    )
    if created != {options.contacts}:
        raise AssertionError(f"the imports created {sorted(created)}, not {options.contacts:,}")
    result["imports"] = {
        "rows": options.contacts,
        "chunk": IMPORT_UPSERT_BATCH,
        "runs": runs,
        "medians": {c: statistics.median(r) for c, r in runs.items()},
        "shares": shares,
    }


def run(options, say) -> dict:
    from tests.perf.engagement import _rules
    from workflows.scoring import SCORE_RECOMPUTE_CHUNK, scores_recompute

    contacts = options.contacts
    say(f"n: setting up {contacts:,} contacts and {EVENTS_PER_CONTACT * contacts:,} events")
    data.fill(contacts)
    events = seed_events(contacts)
    _rules()
    say("n: the scores the recompute gives (untimed), the reference digest")
    scores_recompute(now=NOW)
    reference = digest()
    result: dict = {
        "contacts": contacts,
        "events": events,
        "chunk": SCORE_RECOMPUTE_CHUNK,
        "cpus": len(os.sched_getaffinity(0)),
        "loads": [],
        "changed": set(),
        "chunks": set(),
        "shares": [],
    }

    with (
        tempfile.TemporaryDirectory(prefix="bench-workers-") as logs,
        sending_to_workers() as (backend),
    ):
        log_dir = Path(logs)
        started: list[Worker] = []

        def start(name: str) -> Worker:
            worker = Worker(log_dir, f"{name}-{len(started)}")
            started.append(worker)
            return worker

        def one_process() -> float:
            outcome = scores_recompute(now=NOW)
            result["changed"].add(outcome.changed)
            result["chunks"].add(outcome.chunks)
            return outcome.seconds

        def on_workers(count: int) -> float:
            outcome, taken = fleet.work(
                count, "workflows.recompute_scores_chunk", lambda: shared_recompute(backend)
            )
            result["changed"].add(outcome["changed"])
            result["chunks"].add(outcome["chunks"])
            if count > 1:
                result["shares"].append(taken)
            return outcome["wall"]

        def stale() -> None:
            make_stale()
            result["loads"].append(load())

        def checked(name: str) -> str:
            if digest() != reference:
                raise AssertionError(f"{name}: the scores differ from the one-process run's")
            return ", scores identical"

        try:
            fleet = Fleet(start, start("bench-worker"))
            workflow_contest(options, say, fleet, result)
            result["runs"] = alternating(
                options,
                say,
                "recompute",
                one_process,
                on_workers,
                before=stale,
                after=checked,
            )
            import_contest(options, say, fleet, result)  # last: it empties the tables
        finally:
            for worker in started:
                worker.stop()

    result["medians"] = {name: statistics.median(runs) for name, runs in result["runs"].items()}
    result["changed"], result["chunks"] = sorted(result["changed"]), sorted(result["chunks"])
    result["load_end"] = load()
    return result


WORKFLOW_RUN_NAMES = {
    "property": "a workflow run that enrolls the leads and sets their lead status",
    "marketing": "a workflow run that makes the MQLs marketing",
}


def workflow_rows(n: dict) -> list[tuple[str, str, str]]:
    runs = n.get("workflow_runs")
    if not runs:
        return []
    out = []
    for name, label in WORKFLOW_RUN_NAMES.items():
        entry = runs[name]
        medians, counts = entry["medians"], entry["counts"]
        one, single, two = medians["one_process"], medians["one_worker"], medians["two_workers"]
        shares = "; ".join("+".join(str(c) for c in share) for share in entry["shares"])

        def listed(contender: str, entry=entry) -> str:
            return ", ".join(f"{s:.2f}" for s in entry["runs"][contender])

        out += [
            (
                f"n. {label}, one process (`run_workflows`), {n['contacts']:,} contacts",
                f"{one:.2f} s",
                f"{counts['matched']:,} matched, {counts['enrolled']:,} enrolled, "
                f"{counts['changed']:,} status changes; ranges of {runs['range']:,} ids; "
                f"runs {listed('one_process')}",
            ),
            (
                "n. the same run shared by Celery workers: 1 worker process",
                f"{single:.2f} s",
                f"enqueue → the run done; {single / one:.2f}× the one-process time; "
                f"runs {listed('one_worker')}",
            ),
            (
                "n. the same, 2 worker processes",
                f"{two:.2f} s",
                f"{single / two:.2f}× faster than 1 worker; ranges per worker {shares}; "
                f"runs {listed('two_workers')}; the same counts every run",
            ),
        ]
    return out


def import_rows(n: dict) -> list[tuple[str, str, str]]:
    imports = n.get("imports")
    if not imports:
        return []
    medians, rows_ = imports["medians"], imports["rows"]
    one, single, two = medians["one_process"], medians["one_worker"], medians["two_workers"]
    shares = "; ".join("+".join(str(c) for c in share) for share in imports["shares"])

    def listed(contender: str) -> str:
        return ", ".join(f"{s:.2f}" for s in imports["runs"][contender])

    return [
        (
            f"n. an import of {rows_:,} new contacts into empty tables, one process "
            "(`import_contacts`)",
            f"{one:.2f} s",
            f"{rows_ / one:,.0f} rows/s; upsert chunks of {imports['chunk']:,} rows; "
            f"runs {listed('one_process')}",
        ),
        (
            "n. the same import, its upsert shared by Celery workers: 1 worker process",
            f"{single:.2f} s",
            f"the job queued → the import done; {single / one:.2f}× the one-process time; "
            f"runs {listed('one_worker')}",
        ),
        (
            "n. the same, 2 worker processes",
            f"{two:.2f} s",
            f"{single / two:.2f}× faster than 1 worker; chunks per worker {shares}; "
            f"runs {listed('two_workers')}; {rows_:,} contacts created every run",
        ),
    ]


def rows(n: dict) -> list[tuple[str, str, str]]:
    medians = n["medians"]
    one, single, two = medians["one_process"], medians["one_worker"], medians["two_workers"]

    def runs(name: str) -> str:
        return ", ".join(f"{s:.2f}" for s in n["runs"][name])

    size = f"{n['contacts']:,} contacts, {n['events']:,} events"
    chunks = "/".join(f"{c:,}" for c in n["chunks"])
    changed = "/".join(f"{c:,}" for c in n["changed"])
    shares = "; ".join("+".join(str(c) for c in share) for share in n["shares"])
    return [
        (
            f"n. score recompute, one process (`scores_recompute`), {size}",
            f"{one:.2f} s",
            f"{chunks} chunks of {n['chunk']:,} ids, {changed} scores rewritten; runs {runs('one_process')}",
        ),
        (
            "n. the same shared by Celery workers on Redis: 1 worker process",
            f"{single:.2f} s",
            f"enqueue → chord's total; {single / one:.2f}× the one-process time; "
            f"runs {runs('one_worker')}",
        ),
        (
            "n. the same, 2 worker processes",
            f"{two:.2f} s",
            f"{single / two:.2f}× faster than 1 worker, {one / two:.2f}× than one process; "
            f"chunks per worker {shares}; runs {runs('two_workers')}; "
            f"{n['cpus']} CPUs shared with PostgreSQL; scores identical after every run",
        ),
        *workflow_rows(n),
        *import_rows(n),
    ]
