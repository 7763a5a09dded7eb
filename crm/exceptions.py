"""The API's exception handler (kept apart from crm.api: DRF imports that module early)."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError, RestrictedError
from rest_framework import exceptions
from rest_framework.views import exception_handler as drf_exception_handler

from crm.jobs import JobNotQueued


class Conflict(exceptions.APIException):
    status_code = 409
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class ServiceUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "A service this request needs is unavailable; nothing was changed."
    default_code = "service_unavailable"


def exception_handler(exc, context):
    """Domain errors become 4xx answers with a message instead of 500s; a job the task
    queue did not take, a 503 saying what was not queued."""
    from contacts.status.results import (
        IdempotencyConflict,
        StatusError,
    )

    if isinstance(exc, JobNotQueued):
        exc = ServiceUnavailable(detail=str(exc))
    elif isinstance(exc, IdempotencyConflict):
        exc = Conflict(detail={"idempotency_key": [str(exc)]})
    elif isinstance(exc, StatusError):
        exc = exceptions.ValidationError({"detail": str(exc)})
    elif isinstance(exc, ProtectedError | RestrictedError):
        # A safety net: views check "in use" first, so this only answers races.
        exc = Conflict(
            detail="This object is still referenced by other records and cannot be deleted."
        )
    elif isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        exc = exceptions.ValidationError(detail)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, list):
        # A bare list of messages is about the request as a whole: the documented error body
        # is always an object (crm.schema.ValidationErrorSerializer).
        response.data = {"non_field_errors": response.data}
    return response
