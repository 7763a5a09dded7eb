"""Settings shared by every environment; each value can be set from the environment.

`DATABASE_URL` unset means a SQLite file: `SQLITE_PATH`, or db.sqlite3 next to the project
(WAL, busy timeout, immediate transactions: writers queue instead of failing with "database
is locked").
`CELERY_BROKER_URL` unset means Celery tasks run eagerly in-process.
"""

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


SECRET_KEY = os.environ.get("SECRET_KEY", "insecure-local-development-key-change-me")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = [h for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]

INSTALLED_APPS = [
    "crm.admin_site.MarketableAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_jsonform",
    "django_prometheus",
    "crm",
    "contacts",
    "workflows",
    "billing",
]

MIDDLEWARE = [
    # First and last: django-prometheus times the whole request (crm/metrics.py).
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "crm.middleware.ServiceUnavailableMiddleware",  # a 503, not a traceback, when the DB is down
    "crm.middleware.reject_nul_in_url",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "crm.middleware.AccountTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "crm.urls"
WSGI_APPLICATION = "crm.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

SQLITE_PATH = os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3"))
SQLITE_OPTIONS = {
    # Writers take the lock at BEGIN, so two writers queue instead of deadlocking.
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
}


def database_from_env() -> dict:
    url = os.environ.get("DATABASE_URL")
    if url:
        config = dj_database_url.parse(url, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))
        return config
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": SQLITE_PATH,
        "OPTIONS": dict(SQLITE_OPTIONS),
    }


def replica_databases_from_env() -> dict:
    """`{"replica": …}` when DATABASE_REPLICA_URL names a streaming replica of the primary
    (API list pages and exports read it: crm.replica), else nothing. Tests mirror it to the
    primary's test database."""
    url = os.environ.get("DATABASE_REPLICA_URL")
    if not url:
        return {}
    config = dj_database_url.parse(url, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))
    return {"replica": {**config, "TEST": {"MIRROR": "default"}}}


DATABASES = {"default": database_from_env(), **replica_databases_from_env()}
DATABASE_ROUTERS = ["crm.replica.ReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
# Dates as "2 Nov 2026", instants as "2 Nov 2026, 12:00" (crm/formats/); every integer a
# template shows gets its thousands separator ("2,071"). Form inputs are not localised
# (no field sets `localize`), so what a form shows and reads back stays "2071".
FORMAT_MODULE_PATH = ["crm.formats"]
USE_THOUSAND_SEPARATOR = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

LOGIN_URL = "admin:login"


# --- Cache ----------------------------------------------------------------
# Throttle counts must be shared by every process that serves requests: Redis when
# CACHE_URL is set (production), otherwise a file cache next to the project, which the
# runserver's threads and any local worker processes share.
def cache_from_env() -> dict:
    url = os.environ.get("CACHE_URL")
    if url:
        return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url}
    return {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": os.environ.get("CACHE_DIR", str(BASE_DIR / ".cache")),
    }


CACHES = {"default": cache_from_env()}

# --- REST framework -------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["crm.api.StrictModelPermissions"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    # The Accept header chooses a representation; no ?format= (DRF answers 404 to an unknown one).
    "URL_FORMAT_OVERRIDE": None,
    "DEFAULT_FILTER_BACKENDS": ["crm.api.StrictFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "crm.api.CreatedCursorPagination",
    # The API reads JSON, as its schema says (views that take files say so themselves), with
    # a nesting limit and no NUL character in text (crm.parsers).
    "DEFAULT_PARSER_CLASSES": ["crm.parsers.JSONParser"],
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "crm.schema.AutoSchema",
    # Public intake (forms, external forms, chatflows) per client address; connected apps and
    # ad accounts per token (contacts.intake.api.auth).
    "DEFAULT_THROTTLE_RATES": {
        "intake": os.environ.get("INTAKE_THROTTLE", "60/minute"),
        "intake_apps": os.environ.get("INTAKE_APPS_THROTTLE", "600/minute"),
    },
    "EXCEPTION_HANDLER": "crm.exceptions.exception_handler",
    # How many proxies in front of the app append to X-Forwarded-For. 0: the client is the
    # socket's address and the header is ignored, so no client can pick its own identity
    # for the throttle (crm/throttling.py).
    "NUM_PROXIES": env_int("NUM_PROXIES", 0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Marketable API",
    "DESCRIPTION": "Contacts, marketing status and billing usage.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's JS/CSS come from drf-spectacular-sidecar: nothing is fetched from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "MarketingStatusEnum": "contacts.models.MarketingStatus",
        "SourceKindEnum": "contacts.models.SourceKind",
        "LedgerStatusEnum": "contacts.status.models.LedgerStatus",
        "StatusSourceTypeEnum": "contacts.models.StatusSourceType",
        "AlertKindEnum": "billing.models.AlertKind",
        "EngagementTypeEnum": "contacts.engagement.models.EngagementType",
        "CommunicationTypeEnum": "contacts.outreach.models.CommunicationType",
    },
}

# --- Celery ----------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
# No broker configured: run tasks in-process so a newcomer needs nothing installed.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
# Without a broker, long jobs (imports, sends) run in a thread so their page returns at
# once and their progress can be watched (crm/jobs.py).
EMBEDDED_BACKGROUND_JOBS = os.environ.get("EMBEDDED_BACKGROUND_JOBS", "1") == "1"
# Results are kept only by the tasks that say so (ignore_result=False: a chord's chunks and
# the tasks whose caller reads the result), in the broker's Redis unless
# CELERY_RESULT_BACKEND names another store.
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or (
    CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else None
)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE: dict = {
    "apply-due-downgrades": {"task": "contacts.apply_due_downgrades", "schedule": 3600.0},
    # Daily catch-up; hourly so a period closes within the hour after its end.
    "close-billing-periods": {"task": "billing.close_periods", "schedule": 3600.0},
    # Hygiene policies and rotation plans check hourly whether a step is due.
    "run-hygiene-policies": {"task": "workflows.run_hygiene_policies", "schedule": 3600.0},
    "run-rotation-plans": {"task": "workflows.run_rotation_plans", "schedule": 3600.0},
    # Windowed and decaying scoring rules drift from the incremental scores: daily rebuild.
    "recompute-lead-scores": {"task": "workflows.recompute_scores", "schedule": 86400.0},
    # Scheduled workflows: each minute, queue the runs that are due (their own interval).
    "dispatch-due-workflows": {"task": "workflows.dispatch_due", "schedule": 60.0},
    # Imports and workflow runs whose worker died (its lease ran out) are marked failed.
    "expire-stale-jobs": {"task": "crm.expire_stale_jobs", "schedule": 60.0},
    # The staged rows of import previews nobody committed (contacts/imports/kept.py).
    "drop-stale-import-previews": {
        "task": "contacts.drop_stale_import_previews",
        "schedule": 3600.0,
    },
}
# A worker renews its lease on a job at each step; a job unrenewed this long is taken for
# dead (crm/jobs.py).
JOB_LEASE_SECONDS = env_int("JOB_LEASE_SECONDS", 300)
# A workflow run over the whole contacts table is shared by the workers: one task per range
# of contact ids, which any worker takes (workflows/runs.py). Without a broker (or with
# "0"), a run goes through its ranges one after the other in one process.
WORKFLOW_RUNS_SHARED = (
    os.environ.get("WORKFLOW_RUNS_SHARED", "1" if CELERY_BROKER_URL else "0") == "1"
)
# The same for an import's upsert on PostgreSQL: its chunks of staged rows are tasks that
# any worker takes (contacts/imports/shared.py).
IMPORTS_SHARED = os.environ.get("IMPORTS_SHARED", "1" if CELERY_BROKER_URL else "0") == "1"

# --- Operations: /health/ and /metrics (crm/health.py, crm/metrics.py) --------
# The broker check of /health/ gives up after this many seconds.
HEALTH_BROKER_TIMEOUT = float(os.environ.get("HEALTH_BROKER_TIMEOUT", "2"))
# A scraper sends "Authorization: Bearer <METRICS_TOKEN>"; unset, only staff sessions read
# /metrics.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

# --- Marketable ------------------------------------------------------------
# Bulk status changes above this many contacts ask the user to type the number.
MARKETING_CONFIRM_THRESHOLD = env_int("MARKETING_CONFIRM_THRESHOLD", 1_000)
# A status change over the admin's whole matching list, or by the API's filter over more
# contacts than this, runs as a background job with progress (contacts/status/bulk.py).
BULK_STATUS_JOB_THRESHOLD = env_int("BULK_STATUS_JOB_THRESHOLD", 1_000)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
# A closed period's invoice stays a draft this long, then becomes final and never changes.
BILLING_GRACE_HOURS = env_int("BILLING_GRACE_HOURS", 6)

# --- imports -----------------------------------------------------------------
# Uploaded files (CSV imports) are stored here; not served by the app.
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_URL = "media/"
# The largest CSV an import accepts (admin, API and command): 200 MB is ~2.5M typical rows.
IMPORT_MAX_BYTES = env_int("IMPORT_MAX_BYTES", 200 * 1024 * 1024)
# PostgreSQL keeps a preview's staged rows for the run this long; an import committed later
# reads its file again (contacts/imports/kept.py).
IMPORT_PREVIEW_KEEP_HOURS = env_int("IMPORT_PREVIEW_KEEP_HOURS", 24)


# Absolute links in email (the unsubscribe link) start with this: the public address.
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000")
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "marketing@marketable.example")
