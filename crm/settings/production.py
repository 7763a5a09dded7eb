"""Production: PostgreSQL and Redis from the environment, HTTPS only.

The embedded default's fallbacks (a SQLite file, tasks run in-process) are what a
newcomer wants and what a production site must never get by accident: a missing
`DATABASE_URL` would serve an empty SQLite database, a missing `CELERY_BROKER_URL` would
run every import and close inside the web request. So production refuses to start
without them, or without `SECRET_KEY`, and says which is missing.

HTTPS: the SSL redirect and HSTS (a year, subdomains, preload) are on, so
`manage.py check --deploy` is clean. Behind a proxy that terminates TLS and sets
`X-Forwarded-Proto`, keep them; a proxy that redirects to HTTPS itself can turn the
redirect off (`SECURE_SSL_REDIRECT=false`), and `SECURE_HSTS_SECONDS`,
`SECURE_HSTS_INCLUDE_SUBDOMAINS` and `SECURE_HSTS_PRELOAD` are each configurable.
"""

import os

from django.core.exceptions import ImproperlyConfigured

REQUIRED = {
    "SECRET_KEY": "a long random string (README: how to make one)",
    "DATABASE_URL": "the PostgreSQL database, e.g. postgres://user:password@host:5432/marketable",
    "CELERY_BROKER_URL": "the Redis broker of the Celery workers, e.g. redis://host:6379/0",
}
_missing = [name for name in REQUIRED if not os.environ.get(name, "").strip()]
if _missing:
    raise ImproperlyConfigured(
        "Production settings refuse to start: "
        + " ".join(f"{name} is not set ({REQUIRED[name]})." for name in _missing)
        + " Nothing falls back to SQLite or to in-process tasks in production."
    )

from .base import *  # noqa: E402, F403
from .base import env_bool, env_int  # noqa: E402

DEBUG = False
SECRET_KEY = os.environ["SECRET_KEY"]
CELERY_TASK_ALWAYS_EAGER = False
EMBEDDED_BACKGROUND_JOBS = False

SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
# Probes and scrapers inside the network speak plain HTTP to the app's port.
SECURE_REDIRECT_EXEMPT = [r"^health/$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)

# Throttle counts must be shared by every web process on every host, so the cache is Redis:
# CACHE_URL, or else the broker's Redis (its keys prefixed, apart from Celery's).
if not os.environ.get("CACHE_URL", "").strip() and os.environ["CELERY_BROKER_URL"].startswith(
    ("redis://", "rediss://")
):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["CELERY_BROKER_URL"],
            "KEY_PREFIX": "marketable-cache",
        }
    }

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend")

# Static files (the admin's CSS and JS, Swagger UI) are served by the app itself through
# WhiteNoise, compressed and with far-future cache headers: run `manage.py collectstatic`
# before starting (`make serve-prod` does). A CDN or proxy in front may cache them.
MIDDLEWARE = [*MIDDLEWARE]  # noqa: F405
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "whitenoise.middleware.WhiteNoiseMiddleware",
)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
