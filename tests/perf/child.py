"""Benchmark parts measured in a fresh process: started from the benchmark, set up inside it.

A fresh process is what some figures need (a peak RSS, a tracemalloc peak, a request path
with nothing else in the process). The child module prints its figures as one line of JSON,
its last; anything before it (a warning, a log line) is ignored.

This module imports only the standard library at its top: children import it before
Django is set up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_module(module: str, *args: str, what: str, env: dict | None = None) -> dict:
    """`python -m module args…` in the benchmark's environment (or `env`); its JSON line."""
    out = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=dict(os.environ) if env is None else env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def setup_django():
    """Django in the child as in the rest of the benchmark: the local settings unless the
    environment names others, and no query log kept in memory. Returns the settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings.local")
    import django

    django.setup()
    from django.conf import settings

    settings.DEBUG = False
    return settings
