"""Middleware that answers clearly before or instead of a 500.

* A URL holding a NUL character is refused (400) before any view reads it. Query
  parameters and path segments reach queries in many places (filters, lookups, the
  admin's changelists); PostgreSQL refuses a NUL in text, which would be a 500. No URL of
  this site has a use for one, so the rule of crm.inputs is kept here once for every URL.
* The database does not answer (`OperationalError`, `InterfaceError`: the server is down,
  restarting or unreachable): 503 saying so. Whatever the request had committed before
  stays committed; what it had not is rolled back with its transaction.
* A job the task queue did not take (`crm.jobs.JobNotQueued`) that the interface did not
  answer itself: 503 with the job's own sentence (what was not queued, what to do).

The API (paths under /api/, or a client asking for JSON) gets `{"detail": …}`; a page
gets a short HTML page (the 503s carry `Retry-After`). The log keeps the error.
"""

from __future__ import annotations

import json
import logging

from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, HttpResponseBadRequest, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from crm.inputs import NUL, nul_message
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


API_PREFIX = "/api/"
# The HubSpot-compatible API refuses a NUL itself, in HubSpot's error shape, as its clients
# expect (contacts/hubspot/errors.py).
OWN_NUL_ANSWER = "/crm/v3/"


def reject_nul_in_url(get_response):
    def middleware(request):
        query = request.META.get("QUERY_STRING", "")
        if request.path_info.startswith(OWN_NUL_ANSWER):
            return get_response(request)
        if NUL in request.path_info or "%00" in query or NUL in query:
            message = nul_message("The URL")
            if request.path_info.startswith(API_PREFIX):
                return JsonResponse({"detail": message}, status=400)
            return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
        return get_response(request)

    return middleware


class AccountTimeZoneMiddleware:
    """Render every admin page in the account's time zone.

    A billing period starts at local midnight there, so "non-marketing from 1 Dec 2026"
    must not read "30 Nov" to a user whose server runs in UTC. The zone is active while
    the view runs and while its TemplateResponse renders (both happen inside
    `get_response`). The API keeps UTC: its instants are ISO 8601 with their offset.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path_info.startswith(_admin_prefix()):
            return self.get_response(request)
        from crm.calendar import BillingCalendar

        try:
            zone = BillingCalendar.for_account().tz
        except (OperationalError, InterfaceError):
            # The page will answer 503 itself (ServiceUnavailableMiddleware); no zone needed.
            return self.get_response(request)
        with timezone.override(zone):
            return self.get_response(request)


def _admin_prefix() -> str:
    return reverse("admin:index")
