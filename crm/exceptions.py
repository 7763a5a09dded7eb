"""The API's exception handler (kept apart from crm.api: DRF imports that module early)."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    """Domain errors become 400s with a message instead of 500s."""
    from contacts.services import IdempotencyConflict, StatusError

    if isinstance(exc, IdempotencyConflict):
        exc = exceptions.APIException(detail={"idempotency_key": [str(exc)]})
        exc.status_code = 409
    elif isinstance(exc, StatusError):
        exc = exceptions.ValidationError({"detail": str(exc)})
    elif isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        exc = exceptions.ValidationError(detail)
    return drf_exception_handler(exc, context)
