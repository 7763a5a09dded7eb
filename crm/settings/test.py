"""Tests: SQLite in memory by default, PostgreSQL when DATABASE_URL is set."""

from .base import *  # noqa: F403
from .base import DATABASES, REST_FRAMEWORK

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CELERY_TASK_ALWAYS_EAGER = True
CELERY_BROKER_URL = ""
EMBEDDED_BACKGROUND_JOBS = False  # jobs run inline, inside the test's transaction
WORKFLOW_RUNS_SHARED = False  # the tests of shared runs turn it on
IMPORTS_SHARED = False  # and those of shared imports this
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["NAME"] = ":memory:"
    DATABASES["default"]["TEST"] = {"NAME": ":memory:"}
DATABASES["default"]["CONN_MAX_AGE"] = 0
# The tests read one database; the replica router is tested with its alias patched in.
DATABASES.pop("replica", None)
REST_FRAMEWORK = {
    **REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {"intake": "1000/minute", "intake_apps": "1000/minute"},
}
# Each test run counts throttles in its own memory; tests of the shared cache set their own.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
