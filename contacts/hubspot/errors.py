"""HubSpot's error bodies, and the exception handler that gives every error of the
compatible API one of them.

HubSpot answers an error with `{"status": "error", "message", "correlationId",
"category"}` and, where it has them, `errors` (each `{"message", "code", "in",
"context"}`), `context` and `links`; the official client raises `ApiException` with the
status and that body. A batch reports an input's failure as a `StandardError` inside a
207 answer (`batch_error`), which the client's model requires to carry `context`,
`links` and `errors` too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

from contacts.hubspot.mapping import PropertyProblem

VALIDATION_ERROR = "VALIDATION_ERROR"
OBJECT_NOT_FOUND = "OBJECT_NOT_FOUND"
CONFLICT = "CONFLICT"
MISSING_SCOPES = "MISSING_SCOPES"
INVALID_AUTHENTICATION = "INVALID_AUTHENTICATION"
RATE_LIMITS = "RATE_LIMITS"
UNSUPPORTED = "UNSUPPORTED_OPERATION"

CORRELATION_HEADER = "X-HubSpot-Correlation-Id"
NOT_FOUND_MESSAGE = "resource not found"


class HubSpotError(Exception):
    """An error of the compatible API, answered with HubSpot's body."""

    def __init__(
        self,
        status_code: int,
        category: str,
        message: str,
        *,
        errors: list[dict] | None = None,
        context: dict[str, list[str]] | None = None,
        links: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status_code = status_code
        self.category = category
        self.message = message
        self.errors = errors
        self.context = context
        self.links = links

    def body(self, correlation_id: str) -> dict:
        body = {
            "status": "error",
            "message": self.message,
            "correlationId": correlation_id,
            "category": self.category,
        }
        for key in ("errors", "context", "links"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        return body


def correlation_id(request) -> str:
    """The request's correlation id: in every error body and in a response header."""
    if request is None:
        return str(uuid.uuid4())
    if not getattr(request, "hubspot_correlation_id", None):
        request.hubspot_correlation_id = str(uuid.uuid4())
    return request.hubspot_correlation_id


def not_found() -> HubSpotError:
    return HubSpotError(status.HTTP_404_NOT_FOUND, OBJECT_NOT_FOUND, NOT_FOUND_MESSAGE)


def validation_error(message: str, *, errors: list[dict] | None = None) -> HubSpotError:
    return HubSpotError(status.HTTP_400_BAD_REQUEST, VALIDATION_ERROR, message, errors=errors)


def conflict(existing_id: int) -> HubSpotError:
    return HubSpotError(
        status.HTTP_409_CONFLICT, CONFLICT, f"Contact already exists. Existing ID: {existing_id}"
    )


def missing_permissions(perms: Iterable[str]) -> HubSpotError:
    """HubSpot's "missing scopes" 403, naming Marketable's permissions instead of scopes."""
    perms = list(perms)
    return HubSpotError(
        status.HTTP_403_FORBIDDEN,
        MISSING_SCOPES,
        f"This call needs the permission {' and '.join(perms)}, which the token's user lacks.",
        errors=[
            {
                "message": "All of the following permissions are required.",
                "context": {"requiredPermissions": perms},
            }
        ],
    )


def property_problems_message(problems: list[PropertyProblem]) -> str:
    """HubSpot's sentence for refused property values (a JSON list after a colon)."""
    details = [
        {"isValid": False, "message": p.message, "error": p.code, "name": p.name} for p in problems
    ]
    return f"Property values were not valid: {json.dumps(details)}"


def property_problem_details(problems: list[PropertyProblem]) -> list[dict]:
    return [
        {"message": p.message, "code": p.code, "context": {"propertyName": [p.name]}}
        for p in problems
    ]


def invalid_properties(problems: list[PropertyProblem]) -> HubSpotError:
    return validation_error(
        property_problems_message(problems), errors=property_problem_details(problems)
    )


def batch_error(error: HubSpotError, *, context: dict[str, list[str]]) -> dict:
    """One input's failure in a batch answer (HubSpot's `StandardError`)."""
    return {
        "status": "error",
        "category": error.category,
        "message": error.message,
        "context": {**(error.context or {}), **context},
        "errors": error.errors or [],
        "links": error.links or {},
    }


def _flatten(detail, path: str = "") -> list[tuple[str, str]]:
    """DRF's nested validation detail as (where, message) pairs: `inputs[2].properties`."""
    if isinstance(detail, dict):
        pairs = []
        for key, value in detail.items():
            where = path if key in ("non_field_errors", "detail") else f"{path}.{key}"
            pairs += _flatten(value, where)
        return pairs
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return [(path.lstrip("."), str(item)) for item in detail]
        pairs = []
        for index, item in enumerate(detail):
            if item:
                pairs += _flatten(item, f"{path}[{index}]")
        return pairs
    return [(path.lstrip("."), str(detail))]


def _from_drf(exc: exceptions.APIException) -> HubSpotError:
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        message = (
            "Authentication credentials not found: send a Marketable API token as "
            "Authorization: Bearer <token>."
            if isinstance(exc, exceptions.NotAuthenticated)
            else f"Authentication failed: {exc.detail}"
        )
        return HubSpotError(status.HTTP_401_UNAUTHORIZED, INVALID_AUTHENTICATION, message)
    if isinstance(exc, exceptions.PermissionDenied):
        return HubSpotError(status.HTTP_403_FORBIDDEN, MISSING_SCOPES, str(exc.detail))
    if isinstance(exc, exceptions.NotFound):
        return not_found()
    if isinstance(exc, exceptions.Throttled):
        return HubSpotError(exc.status_code, RATE_LIMITS, str(exc.detail))
    if isinstance(exc, exceptions.ValidationError):
        pairs = _flatten(exc.detail)
        message = "; ".join(f"{where}: {text}" if where else text for where, text in pairs)
        errors = [{"message": text, "in": where} for where, text in pairs]
        return validation_error(f"Invalid input: {message}", errors=errors)
    if isinstance(exc, exceptions.ParseError):
        return validation_error(f"Invalid input JSON: {exc.detail}")
    category = UNSUPPORTED if exc.status_code in (405, 415, 406) else VALIDATION_ERROR
    return HubSpotError(exc.status_code, category, str(exc.detail))


def hubspot_exception_handler(exc, context):
    """Every error of the compatible API in HubSpot's shape (others still answer 500)."""
    if isinstance(exc, Http404):
        exc = not_found()
    elif isinstance(exc, DjangoValidationError):
        exc = validation_error("; ".join(exc.messages))
    elif isinstance(exc, exceptions.APIException):
        exc = _from_drf(exc)
    if not isinstance(exc, HubSpotError):
        return None
    request = context.get("request")
    response = Response(exc.body(correlation_id(request)), status=exc.status_code)
    if exc.status_code == status.HTTP_401_UNAUTHORIZED:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response
