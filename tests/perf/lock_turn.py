"""How long one request holds the usage lock, in a fresh process (tests/perf/load.py runs it).

Every status change, and every form submission that creates a marketing contact, takes the
usage lock first (crm/locks.py) and keeps it to its commit, so however many cores serve
them, such requests pass one at a time: 1 / (the time one holds it) is the ceiling of their
rate. This measures that time with no other client: through Django's test client, with the
production request path (token authentication for a change, the public form for a
submission), from the moment the usage row's `SELECT … FOR UPDATE` returns to the end of
the commit (an on-commit callback registered at that moment runs before any other).

    python -m tests.perf.lock_turn '<json: token, ids, form_path, run, requests>'

The environment must raise the intake throttle (load.INTAKE_THROTTLE). Prints one line of
JSON: for "change" and "form", the holds' median and p90 in ms, the statements run after
the lock, and the requests' own CPU and wall time in ms.
"""

from __future__ import annotations

import json
import statistics
import sys
import time


def measure(task: dict) -> dict:
    from django.db import connection, transaction
    from django.test import Client

    from tests.perf.load import _request

    holds: list[tuple[float, int]] = []
    state = {"locked_at": None, "statements": 0}

    def committed() -> None:
        holds.append(((time.perf_counter() - state["locked_at"]) * 1000, state["statements"]))
        state["locked_at"] = None

    def watch(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if state["locked_at"] is None:
            if "FOR UPDATE" in sql and "contacts_usagestate" in sql:
                state["locked_at"] = time.perf_counter()
                state["statements"] = 0
                transaction.on_commit(committed)
        else:
            state["statements"] += 1
        return result

    # The load section's own requests: each change writes (marketing, non-marketing, …),
    # each submission brings a new email. A change is the token's; a submission is public.
    client = Client()
    specs = {
        "change": ("status", {"ids": [task["ids"]], "run": task["run"]}),
        "form": ("form", {"path": task["form_path"], "run": task["run"]}),
    }
    token = {"change": {"Authorization": f"Token {task['token']}"}, "form": {}}

    def send(name: str, n: int):
        kind, spec = specs[name]
        method, path, body, headers = _request(kind, spec, 0, n)
        return client.generic(
            method, path, body, content_type="application/json", headers={**headers, **token[name]}
        )

    figures = {}
    with connection.execute_wrapper(watch):
        for name in specs:
            warm = len(task["ids"])  # one untimed round first
            for n in range(warm):
                send(name, n)
            holds.clear()
            cpu, wall = time.process_time(), time.perf_counter()
            for n in range(warm, warm + task["requests"]):
                response = send(name, n)
                if not 200 <= response.status_code < 300:
                    raise RuntimeError(
                        f"{name} {n}: {response.status_code} {response.content[:300]!r}"
                    )
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            times = sorted(ms for ms, _ in holds)
            figures[name] = {
                "holds": len(times),
                "median_ms": statistics.median(times),
                "p90_ms": statistics.quantiles(times, n=10, method="inclusive")[8],
                "statements": statistics.median(s for _, s in holds),
                "cpu_ms": cpu * 1000 / task["requests"],
                "wall_ms": wall * 1000 / task["requests"],
            }
    return figures


def main() -> int:
    from tests.perf.child import setup_django

    settings = setup_django()
    from django.core import signals
    from django.db import close_old_connections

    settings.EMAIL_BACKEND = "django.core.mail.backends.dummy.EmailBackend"
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    # One connection kept for every request, as a server's thread keeps its own.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    print(json.dumps(measure(json.loads(sys.argv[1]))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
