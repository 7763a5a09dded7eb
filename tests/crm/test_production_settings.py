"""crm.settings.production: it refuses to start without its services, and the README's
production example passes `manage.py check --deploy` with no warning."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def readme_exports() -> str:
    """The `export` lines of the README's production example, with this interpreter."""
    section = README.read_text().split("## Running on PostgreSQL and Redis", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    exports = [line for line in block.splitlines() if line.startswith("export ")]
    assert any("SECRET_KEY" in line for line in exports)
    return "\n".join(exports).replace(".venv/bin/python", shlex.quote(sys.executable))


def run(script: str) -> subprocess.CompletedProcess:
    """`script` in bash from the project's directory, without this process's settings."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


PYTHON = shlex.quote(sys.executable)


def test_the_readme_production_example_passes_check_deploy():
    result = run(f"{readme_exports()}\n{PYTHON} manage.py check --deploy --fail-level WARNING")

    assert result.returncode == 0, result.stderr + result.stdout
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stderr + result.stdout


@pytest.mark.parametrize("name", ["DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY"])
def test_production_refuses_to_start_without(name):
    result = run(f"{readme_exports()}\nunset {name}\n{PYTHON} manage.py check")

    assert result.returncode != 0
    assert f"Production settings refuse to start: {name} is not set" in result.stderr
    assert "Nothing falls back to SQLite" in result.stderr


def settings_seen(extra: str = "") -> list[str]:
    probe = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.CELERY_TASK_ALWAYS_EAGER, "
        "s.DATABASES['default']['ENGINE'])"
    )
    result = run(f"{readme_exports()}\n{extra}\n{PYTHON} -c {shlex.quote(probe)}")
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_production_redirects_to_https_and_sends_hsts_by_default():
    assert settings_seen() == [
        "True",
        str(365 * 24 * 3600),
        "False",
        "django.db.backends.postgresql",
    ]


def test_a_proxy_that_terminates_tls_can_turn_the_redirect_off():
    redirect, hsts, *_ = settings_seen("export SECURE_SSL_REDIRECT=false")
    assert (redirect, hsts) == ("False", str(365 * 24 * 3600))
