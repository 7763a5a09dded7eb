"""l. Concurrent load: 16 clients against the production server on loopback (DESIGN §4).

The server is what `make serve-prod` starts: gunicorn with crm/gunicorn.py and the
production settings, bound to a free port on 127.0.0.1, with the workers × threads given
(`--workers`, `--threads`; by default crm/gunicorn.py's own). For the run the SSL redirect
is off (plain HTTP on loopback), the public intake throttle is raised (`INTAKE_THROTTLE`)
so that the throttle is not what is measured, mail goes nowhere, and the broker and cache
are a Redis database of their own (`--redis-db`). It must answer /health/ with 200 before
anything is measured, and it is stopped at the end, also after an error.

The database holds `--contacts` non-marketing contacts (`data.fill`), a superuser with an
API token and a published hosted form that creates marketing contacts. `--clients`
processes (16), each with one keep-alive connection, then run three phases, each bounded in
time (`--load-seconds`) and in requests per client (`--load-requests`), after a short
untimed warm-up:

1. list reads, `GET /api/contacts/` with the filters of the reads section in turn;
2. single status changes, `POST /api/contacts/<id>/marketing-status/` with an
   Idempotency-Key, each client on its own contacts, each contact set marketing, then
   non-marketing, then marketing again…: every request changes something and writes its
   ledger row;
3. public form submissions, `POST /api/intake/forms/<slug>/`, each a new email with the
   submission id the hosted page would send.

A request that finds its keep-alive connection closed by the server (a worker replaced
after its `max_requests`, or idle past `keepalive`) is sent again once on a new connection
with the same idempotency key or submission id, and counted as a reconnect. Every answer
that is not 2xx is counted by status code, every failed request by its error.

The naive baseline, in the same run: the same three phases (on contacts of their own, with
keys and emails of their own) against Django's development server, `manage.py runserver
--noreload` with the same settings: one process, a thread per connection. It is how a
Django site is served before anyone chooses a server; the table gives its figures beside
each of gunicorn's (`--no-naive` leaves it out).

Then the usage lock's turn (tests/perf/lock_turn.py, a fresh process, on contacts of its
own): how long one change and one submission hold the lock with no other client, whose
inverse caps their rates whatever the cores.

Afterwards: deadlocks (`pg_stat_database.deadlocks`, the difference over the run, read once
the server's connections have closed); the live counter against the ledger and a recount of
the contacts, and every period's stored peak against the ledger replay — the selectors
`verify_billing` uses, read in one snapshot.

This module imports only the standard library at its top: the client processes are spawned
and import it without Django.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import statistics
import time

CLIENTS = 16
PHASE_SECONDS = 15.0
PHASE_REQUESTS = 20_000  # per client and phase: the count bound
WARM_UP_SECONDS = 3.0
CONTACTS_PER_CLIENT = 64  # each client cycles over its own contacts
CHANGES_BAR = 500.0  # single status changes per second
SUBMISSIONS_BAR = 300.0  # public form submissions per second
# The intake throttle for the run: far above anything 16 clients can send.
INTAKE_THROTTLE = "100000000/minute"
REDIS_DB = 11
FORM_SLUG = "bench-load"
TURN_REQUESTS = 256  # each kind, for the usage lock's turn (tests/perf/lock_turn.py)
HEALTH_TIMEOUT = 90.0  # seconds for gunicorn to boot and answer /health/


def add_arguments(parser) -> None:
    group = parser.add_argument_group("l. concurrent load (--only load)")
    group.add_argument("--clients", type=int, default=CLIENTS, help="client processes")
    group.add_argument("--load-seconds", type=float, default=PHASE_SECONDS, help="each phase")
    group.add_argument(
        "--load-requests", type=int, default=PHASE_REQUESTS, help="each client's cap per phase"
    )
    group.add_argument("--workers", type=int, help="gunicorn workers (crm/gunicorn.py's default)")
    group.add_argument("--threads", type=int, help="threads per worker (crm/gunicorn.py's default)")
    group.add_argument("--redis-db", type=int, default=REDIS_DB, help="the server's broker/cache")
    group.add_argument(
        "--no-naive",
        action="store_true",
        help="leave out the naive baseline (the same phases against Django's runserver)",
    )


# --- the client processes (standard library only) ------------------------------------


def _request(kind: str, spec: dict, client: int, n: int) -> tuple[str, str, bytes | None, dict]:
    """The n-th request of one client in a phase: method, path, body, extra headers."""
    if kind == "list":
        paths = spec["paths"]
        return "GET", paths[(client + n) % len(paths)], None, {}
    if kind == "status":
        ids = spec["ids"][client]
        pk = ids[n % len(ids)]
        # Each contact in turn: marketing, non-marketing, marketing…
        status = "marketing" if (n // len(ids)) % 2 == 0 else "non_marketing"
        key = f"{spec['run']}-{client}-{n}"
        body = json.dumps({"status": status}).encode()
        return "POST", f"/api/contacts/{pk}/marketing-status/", body, {"Idempotency-Key": key}
    if kind == "form":
        tag = f"{spec['run']}-{client}-{n}"
        body = {
            "email": f"load-{tag}@load.example",
            "first_name": f"Load {n}",
            "submission_id": tag,
        }
        return "POST", spec["path"], json.dumps(body).encode(), {}
    raise ValueError(kind)


# The server closed the keep-alive connection before answering: send again on a new one.
_CLOSED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def client_run(client: int, task: dict, barrier, results) -> None:
    """One client's phase: requests one after another on one keep-alive connection until
    the phase's time or count runs out; puts its figures on `results`."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    headers.update(task["headers"])
    connection = http.client.HTTPConnection(task["host"], task["port"], timeout=60)
    latencies: list[float] = []
    statuses: collections.Counter = collections.Counter()
    errors: collections.Counter = collections.Counter()
    reconnects = 0
    barrier.wait()
    started = time.perf_counter()
    deadline = started + task["seconds"]
    n = 0
    while n < task["requests"] and time.perf_counter() < deadline:
        method, path, body, extra = _request(task["kind"], task["spec"], client, n)
        sent = time.perf_counter()
        status = None
        for attempt in (1, 2):
            try:
                connection.request(method, path, body=body, headers={**headers, **extra})
                response = connection.getresponse()
                response.read()
                status = response.status
                break
            except _CLOSED as error:
                connection.close()
                if attempt == 2:
                    errors[type(error).__name__] += 1
                else:
                    reconnects += 1
            except Exception as error:  # a timeout or a refused connection: counted, go on
                connection.close()
                errors[type(error).__name__] += 1
                break
        if status is not None:
            statuses[status] += 1
            if 200 <= status < 300:
                latencies.append((time.perf_counter() - sent) * 1000)
        n += 1
    connection.close()
    results.put(
        {
            "client": client,
            "seconds": time.perf_counter() - started,
            "latencies": latencies,
            "statuses": dict(statuses),
            "errors": dict(errors),
            "reconnects": reconnects,
        }
    )


def run_phase(
    kind: str,
    spec: dict,
    *,
    host: str,
    port: int,
    options,
    headers: dict,
    seconds: float | None = None,
) -> dict:
    """All clients at once on one phase; their figures summed."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(options.clients + 1)
    results = context.Queue()
    task = {
        "kind": kind,
        "spec": spec,
        "host": host,
        "port": port,
        "headers": headers,
        "seconds": seconds or options.load_seconds,
        "requests": options.load_requests,
    }
    processes = [
        context.Process(target=client_run, args=(client, task, barrier, results), daemon=True)
        for client in range(options.clients)
    ]
    for process in processes:
        process.start()
    load_before = os.getloadavg()[0]
    barrier.wait(timeout=120)
    figures = [results.get(timeout=task["seconds"] + 120) for _ in processes]
    for process in processes:
        process.join(timeout=10)
    latencies = sorted(x for f in figures for x in f["latencies"])
    statuses: collections.Counter = collections.Counter()
    errors: collections.Counter = collections.Counter()
    for f in figures:
        statuses.update({int(k): v for k, v in f["statuses"].items()})
        errors.update(f["errors"])
    wall = max(f["seconds"] for f in figures)
    ok = len(latencies)
    return {
        "clients": len(figures),
        "seconds": wall,
        "requests": sum(statuses.values()) + sum(errors.values()),
        "ok": ok,
        "per_second": ok / wall if wall else 0.0,
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": (
            statistics.quantiles(latencies, n=100, method="inclusive")[98]
            if len(latencies) > 1
            else float("nan")
        ),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "reconnects": sum(f["reconnects"] for f in figures),
        "load": f"{load_before:.1f} → {os.getloadavg()[0]:.1f}",
    }


# --- the server --------------------------------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """gunicorn as `make serve-prod` starts it, on a free loopback port; a context manager
    that always stops it."""

    def __init__(self, options, workdir: str, *, naive: bool = False):
        import runpy
        import secrets
        from pathlib import Path
        from unittest import mock

        from django.conf import settings

        self.base = Path(settings.BASE_DIR)
        self.naive = naive
        self.port = _free_port()
        redis = f"redis://127.0.0.1:6379/{options.redis_db}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "crm.settings.production",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "CELERY_BROKER_URL": redis,
            "SECURE_SSL_REDIRECT": "false",
            "BIND": f"127.0.0.1:{self.port}",
            "INTAKE_THROTTLE": INTAKE_THROTTLE,
            "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
            "PROMETHEUS_MULTIPROC_DIR": os.path.join(workdir, "metrics"),
        }
        if options.workers:
            self.env["WEB_CONCURRENCY"] = str(options.workers)
        if options.threads:
            self.env["GUNICORN_THREADS"] = str(options.threads)
        os.makedirs(self.env["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
        # The shape as crm/gunicorn.py reads it from this environment.
        with mock.patch.dict(os.environ, self.env, clear=True):
            config = runpy.run_path(str(self.base / "crm" / "gunicorn.py"))
        self.shape = {k: config[k] for k in ("workers", "threads", "max_requests", "keepalive")}
        if naive:
            self.shape = {"server": "runserver", "workers": 1, "threads": "one per connection"}
        self.log_path = os.path.join(workdir, "runserver.log" if naive else "gunicorn.log")
        self.process = None

    def __enter__(self) -> Server:
        import subprocess
        import sys

        if self.naive:
            command = [sys.executable, "manage.py", "runserver", "--noreload", self.env["BIND"]]
        else:
            gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
            command = [gunicorn, "-c", "crm/gunicorn.py", "crm.wsgi"]
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in __exit__)
        self.process = subprocess.Popen(
            command,
            cwd=self.base,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_healthy()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}): {self.tail()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/health/")
                response = connection.getresponse()
                last = f"{response.status} {response.read()[:300]!r}"
                connection.close()
                if response.status == 200:
                    return
            except OSError as error:
                last = str(error)
            time.sleep(0.5)
        raise RuntimeError(f"/health/ did not answer 200 in {HEALTH_TIMEOUT:.0f} s: {last}")

    def __exit__(self, *exc) -> bool:
        import signal
        import subprocess

        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # graceful: workers finish their requests
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the session this run started
                self.process.wait(timeout=10)
        self.log.close()
        return False

    def tail(self, lines: int = 20) -> str:
        with open(self.log_path, "rb") as log:
            return b"\n".join(log.read().splitlines()[-lines:]).decode(errors="replace")

    def log_summary(self) -> dict:
        """Worker boots and tracebacks in the server's log (the access log is there too)."""
        with open(self.log_path, "rb") as log:
            text = log.read().decode(errors="replace")
        return {
            "worker_boots": text.count("Booting worker"),
            "tracebacks": text.count("Traceback (most recent call last)"),
        }


# --- the database ----------------------------------------------------------------------


def prepare(contacts: int, clients: int, say) -> dict:
    """The contacts, a superuser's token, the hosted form and each client's contacts."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from contacts.intake.models import Form
    from contacts.intake.services import form_save
    from contacts.models import Source
    from tests.perf import data
    from tests.perf.reads import api_paths, sample_terms

    say(f"l: {contacts:,} non-marketing contacts")
    data.fill(contacts)
    user, _ = get_user_model().objects.update_or_create(
        username="bench-load", defaults={"is_staff": True, "is_superuser": True}
    )
    token, _ = Token.objects.get_or_create(user=user)
    if not Form.objects.filter(slug=FORM_SLUG).exists():
        form_save(
            form=Form(
                name="Benchmark load form",
                slug=FORM_SLUG,
                fields=[{"name": "first_name"}],
                create_as_marketing=True,
            )
        )
    source = Source.objects.get(name="Benchmark import")
    paths = [url for _, url in api_paths(timezone.now(), sample_terms(), source.pk)]
    # Each client's own contacts, spread over the table; the naive baseline's clients take the
    # contacts half a step further on, and the lock's turn a quarter step: each set still
    # non-marketing when its own requests start.
    step = max(1, contacts // (clients * CONTACTS_PER_CLIENT))

    def spread(offset: int) -> list[list[int]]:
        return [
            [1 + (k * clients + c) * step + offset for k in range(CONTACTS_PER_CLIENT)]
            for c in range(clients)
        ]

    data.checkpoint()
    return {
        "token": token.key,
        "paths": paths,
        "ids": spread(0),
        "naive_ids": spread(step // 2) if step >= 2 else None,
        "turn_ids": spread(step // 4)[0] if step >= 4 else None,
    }


def deadlocks() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return int(cursor.fetchone()[0])


def check_counters() -> dict:
    """The live counter against the ledger and a recount, and every period's peak against the
    ledger replay: verify_billing's selectors, read in one snapshot."""
    import datetime as dt

    from contacts.models import Contact
    from contacts.status.models import PeriodUsage
    from contacts.status.selectors import ledger_replay, status_clock, usage_current
    from crm.snapshot import read_snapshot

    with read_snapshot():
        now = status_clock()
        usage = usage_current(at=now)
        ledger_now = ledger_replay(
            start=usage.period_start, end=now + dt.timedelta(microseconds=1)
        ).closing_count
        recount = Contact.objects.billable(now).count()
        periods = [
            {
                "start": row.period_start.date().isoformat(),
                "peak": row.peak_count,
                "replay": ledger_replay(start=row.period_start, end=row.period_end).peak_count,
            }
            for row in PeriodUsage.objects.order_by("period_start")
        ]
    return {
        "live": usage.live_count,
        "ledger": ledger_now,
        "recount": recount,
        "periods": periods,
        "ok": usage.live_count == ledger_now == recount
        and all(p["peak"] == p["replay"] for p in periods),
    }


def serve(server: Server, state: dict, ids: list, run_id: str, options, say) -> dict:
    """The warm-up and the three phases against one running server."""
    common = {
        "host": "127.0.0.1",
        "port": server.port,
        "options": options,
        "headers": {"Authorization": f"Token {state['token']}"},
    }
    say(f"l: warm-up, {WARM_UP_SECONDS:.0f} s of list reads (untimed)")
    run_phase("list", {"paths": state["paths"]}, seconds=WARM_UP_SECONDS, **common)
    phases = {
        "list": {"paths": state["paths"]},
        "status": {"ids": ids, "run": run_id},
        "form": {"path": f"/api/intake/forms/{FORM_SLUG}/", "run": run_id},
    }
    results = {}
    for kind, spec in phases.items():
        say(f"l: {kind}: {options.clients} clients, {options.load_seconds:.0f} s")
        results[kind] = r = run_phase(kind, spec, **common)
        say(
            f"   {r['per_second']:,.0f}/s, p50 {r['p50_ms']:.0f} ms, p99 "
            f"{r['p99_ms']:.0f} ms; statuses {r['statuses']}, errors {r['errors']}, "
            f"reconnects {r['reconnects']}; load {r['load']}"
        )
    return results


def lock_turn(state: dict, run_id: str) -> dict:
    """The usage lock's turn, measured in a fresh process (tests/perf/lock_turn.py)."""
    from tests.perf.child import run_module

    task = {
        "token": state["token"],
        "ids": state["turn_ids"],
        "form_path": f"/api/intake/forms/{FORM_SLUG}/",
        "run": f"{run_id}-turn",
        "requests": TURN_REQUESTS,
    }
    return run_module(
        "tests.perf.lock_turn",
        json.dumps(task),
        what="the lock's turn",
        env={**os.environ, "INTAKE_THROTTLE": INTAKE_THROTTLE},
    )


def run(options, say) -> dict:
    import tempfile

    from django.db import connections

    from contacts.models import Contact
    from contacts.status.models import StatusChange

    state = prepare(options.contacts, options.clients, say)
    run_id = f"{int(time.time())}"
    connections.close_all()
    results: dict = {"contacts": options.contacts, "clients": options.clients}
    before = deadlocks()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as workdir:
        server = Server(options, workdir)
        results["server"] = server.shape
        results["intake_throttle"] = INTAKE_THROTTLE
        say(
            f"l: gunicorn {server.shape['workers']} workers × {server.shape['threads']} threads "
            f"on 127.0.0.1:{server.port}"
        )
        with server:
            results.update(serve(server, state, state["ids"], run_id, options, say))
        results["server_log"] = server.log_summary()
        if options.no_naive or state["naive_ids"] is None:
            say("l: no naive baseline (--no-naive, or too few contacts for its own)")
        else:
            naive = Server(options, workdir, naive=True)
            say(f"l: the naive baseline: Django's runserver on 127.0.0.1:{naive.port}")
            with naive:
                results["naive"] = serve(
                    naive, state, state["naive_ids"], f"{run_id}-naive", options, say
                )
            results["naive"]["server_log"] = naive.log_summary()
    if state["turn_ids"] is not None:
        say(f"l: the usage lock's turn: {TURN_REQUESTS} changes and submissions, one at a time")
        results["lock_turn"] = turn = lock_turn(state, run_id)
        say(
            "   held "
            + ", ".join(f"{k} {v['median_ms']:.1f} ms" for k, v in turn.items())
            + " (median, lock to commit)"
        )
    connections.close_all()
    time.sleep(1)  # the servers' backends have exited and reported their statistics
    results["deadlocks"] = deadlocks() - before
    results["ledger_rows"] = StatusChange.objects.count()
    results["form_contacts"] = Contact.objects.filter(email__endswith="@load.example").count()
    results["counters"] = check_counters()
    say(
        f"l: deadlocks {results['deadlocks']}; counters {results['counters']}; "
        f"server log {results['server_log']}"
    )
    return results


# --- the report ----------------------------------------------------------------------


def _failures(r: dict) -> int:
    return sum(v for k, v in r["statuses"].items() if int(k) >= 500) + sum(r["errors"].values())


def _answers(r: dict) -> str:
    other = {k: v for k, v in r["statuses"].items() if not 200 <= int(k) < 300}
    parts = [f"{v:,} × {k}" for k, v in other.items()]
    parts += [f"{v:,} × {k}" for k, v in r["errors"].items()]
    return ", ".join(parts) if parts else "every answer 2xx"


def rows(load: dict) -> list[tuple[str, str, str]]:
    from tests.perf.report import verdict

    shape = load["server"]
    setting = (
        f"{load['clients']} clients, gunicorn {shape['workers']} workers × {shape['threads']} "
        f"threads, {load['contacts']:,} contacts"
    )

    naive = load.get("naive")

    def line(kind: str, label: str, unit: str, bar: float | None = None) -> tuple[str, str, str]:
        r = load[kind]
        note = (
            f"{r['ok']:,} in {r['seconds']:.1f} s; p50 {r['p50_ms']:.0f} ms, p99 "
            f"{r['p99_ms']:.0f} ms; {_answers(r)}; {r['reconnects']} reconnects; load {r['load']}"
        )
        if bar is not None:
            note += "; " + verdict(bar / max(r["per_second"], 1e-9), 1)
        if naive:
            n = naive[kind]
            note += (
                f"; naive (Django's runserver, one process): {n['per_second']:,.0f}/s, p50 "
                f"{n['p50_ms']:.0f} ms, p99 {n['p99_ms']:.0f} ms, {_answers(n)}; gunicorn "
                f"{r['per_second'] / max(n['per_second'], 1e-9):.2f}× its rate"
            )
        title = f"l. {label} ({setting}" + (f"; bar ≥ {bar:,.0f}/s)" if bar else ")")
        return title, f"{r['per_second']:,.0f} {unit}/s", note

    served = [load] + ([naive] if naive else [])
    failures = sum(_failures(s[k]) for s in served for k in ("list", "status", "form"))
    counters = load["counters"]
    peaks = ", ".join(f"{p['start']}: {p['peak']:,} = {p['replay']:,}" for p in counters["periods"])
    return [
        line("list", "API list reads, GET /api/contacts/ with filters", "requests"),
        line("status", "single status changes, POST …/marketing-status/", "changes", CHANGES_BAR),
        line(
            "form",
            "public form submissions, POST /api/intake/forms/<slug>/",
            "submissions",
            SUBMISSIONS_BAR,
        ),
        (
            "l. 5xx answers and failed requests (bar 0)",
            f"{failures:,}",
            verdict(failures, 0)
            + (" (gunicorn's and the naive baseline's)" if naive else "")
            + f"; gunicorn's log holds {load['server_log']['tracebacks']} "
            f"tracebacks, {load['server_log']['worker_boots']} worker boots (max_requests "
            f"{shape['max_requests']})"
            + (f", runserver's {naive['server_log']['tracebacks']} tracebacks" if naive else "")
            + f"; intake throttle raised to {load['intake_throttle']} for the run",
        ),
        ("l. deadlocks (bar 0)", f"{load['deadlocks']:,}", verdict(load["deadlocks"], 0)),
        (
            "l. counters = ledger replay = recount",
            "equal" if counters["ok"] else "DIFFER",
            f"live {counters['live']:,}, ledger {counters['ledger']:,}, recount "
            f"{counters['recount']:,}; peaks (stored = replay) {peaks}; "
            + ("meets the bar" if counters["ok"] else "MISSES the bar"),
        ),
        *_turn_rows(load.get("lock_turn")),
    ]


def _turn_rows(turn: dict | None) -> list[tuple[str, str, str]]:
    """The usage lock's turn beside the rate bars it caps."""
    if not turn:
        return []
    out = []
    for kind, label, unit, bar in (
        ("change", "one single status change", "changes", CHANGES_BAR),
        ("form", "one public form submission", "submissions", SUBMISSIONS_BAR),
    ):
        t = turn[kind]
        ceiling = 1000 / t["median_ms"]
        out.append(
            (
                f"l. the usage lock held by {label}, alone: lock to commit",
                f"{t['median_ms']:.1f} ms",
                f"median of {t['holds']:,}, p90 {t['p90_ms']:.1f} ms; {t['statements']:g} "
                f"statements after the lock; one at a time through it: at most "
                f"{ceiling:,.0f} {unit}/s whatever the cores; the bar of {bar:,.0f}/s needs "
                f"≤ {1000 / bar:.1f} ms; the whole request {t['cpu_ms']:.1f} ms of CPU, "
                f"{t['wall_ms']:.1f} ms",
            )
        )
    return out
