"""A clear 503 when a service the request needs is down, instead of a 500 traceback.

* The database does not answer (`OperationalError`, `InterfaceError`: the server is down,
  restarting or unreachable): 503 saying so. Whatever the request had committed before
  stays committed; what it had not is rolled back with its transaction.
* A job the task queue did not take (`crm.jobs.JobNotQueued`) that the interface did not
  answer itself: 503 with the job's own sentence (what was not queued, what to do).

The API (paths under /api/, or a client asking for JSON) gets `{"detail": …}`; a page
gets a short HTML page. Both carry `Retry-After`. The log keeps the error.
"""

from __future__ import annotations

import json
import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse
from django.utils.html import format_html

from crm.jobs import JobNotQueued

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 30
DATABASE_DOWN = (
    "The database is not answering, so this request could not be completed. Nothing you "
    "had saved before is lost; try again in a minute."
)


class ServiceUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, OperationalError | InterfaceError):
            logger.error(
                "database unavailable for %s %s: %s", request.method, request.path, exception
            )
            return unavailable(request, DATABASE_DOWN)
        if isinstance(exception, JobNotQueued):
            return unavailable(request, str(exception))
        return None


def _wants_json(request) -> bool:
    return request.path.startswith("/api/") or "json" in request.headers.get("Accept", "")


def unavailable(request, message: str) -> HttpResponse:
    if _wants_json(request):
        response = HttpResponse(
            json.dumps({"detail": message}), status=503, content_type="application/json"
        )
    else:
        response = HttpResponse(
            format_html(
                "<!doctype html><title>Service unavailable</title><h1>Service unavailable</h1>"
                "<p>{}</p>",
                message,
            ),
            status=503,
        )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response
