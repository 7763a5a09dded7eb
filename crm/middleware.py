"""A URL holding a NUL character is refused (400) before any view reads it.

Query parameters and path segments reach queries in many places (filters, lookups, the
admin's changelists); PostgreSQL refuses a NUL in text, which would be a 500. No URL of
this site has a use for one, so the rule of crm.inputs is kept here once for every URL.
"""

from __future__ import annotations

from django.http import HttpResponseBadRequest, JsonResponse

from crm.inputs import NUL, nul_message

API_PREFIX = "/api/"


def reject_nul_in_url(get_response):
    def middleware(request):
        query = request.META.get("QUERY_STRING", "")
        if NUL in request.path_info or "%00" in query or NUL in query:
            message = nul_message("The URL")
            if request.path_info.startswith(API_PREFIX):
                return JsonResponse({"detail": message}, status=400)
            return HttpResponseBadRequest(message, content_type="text/plain; charset=utf-8")
        return get_response(request)

    return middleware
