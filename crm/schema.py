"""The OpenAPI schema's shared parts: the error answers every operation documents.

Kept apart from crm.api, which DRF imports while `rest_framework.views` loads (its default
permission class): importing drf-spectacular's AutoSchema there would be circular.

`AutoSchema` (settings: `REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"]`) adds to each operation
the error statuses it can answer, derived from the operation itself, so no view declares
them one by one:

* 400 when it takes input (a body, query or header parameters);
* 401 and 403 when it needs authentication;
* 404 when its path names an object;
* 409 for a DELETE (a row still referenced) and when it takes an Idempotency-Key
  (the key reused for a different request);
* 415 when it takes a body (a media type it does not parse);
* 429 when it is throttled.

A view's own declaration of a status (with its description) wins over the default one;
an error it declares without a body gets the standard body.
"""

from __future__ import annotations

from drf_spectacular import openapi
from rest_framework import serializers

IDEMPOTENCY_HEADER = "Idempotency-Key"


class ErrorSerializer(serializers.Serializer):
    """Every error that is not about the request's fields: 401, 403, 404, 405, 415, 429."""

    detail = serializers.CharField(help_text="What went wrong, in a sentence.")


ERROR_DESCRIPTIONS = {
    400: "The request is invalid: the messages per field (`non_field_errors` or `detail` for "
    "the request as a whole); nothing was changed.",
    401: "No credentials, or invalid ones.",
    403: "Authenticated, but without the permission this needs.",
    404: "No such object.",
    409: "The request conflicts with the current state; nothing was changed.",
    415: "The body's media type is not one this operation reads.",
    429: "Too many requests from this client; retry later.",
}


class ValidationErrorSerializer(serializers.Serializer):
    """400 and 409 bodies: an object whose keys are field names (or `non_field_errors` and
    `detail` for the request as a whole) and whose values are lists of messages (or, for a
    nested field, objects of the same shape)."""

    non_field_errors = serializers.ListField(child=serializers.CharField(), required=False)


class AutoSchema(openapi.AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation["responses"]
        for status in self._error_statuses(operation):
            responses.setdefault(str(status), {"description": ERROR_DESCRIPTIONS[status]})
        for code, response in responses.items():
            if code.startswith("4") and "content" not in response:
                # A view may declare an error with its own description only: the body is
                # the standard one all the same.
                body = self._messages_ref() if code in ("400", "409") else self._error_ref()
                response["content"] = {"application/json": {"schema": body}}
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _error_statuses(self, operation) -> list[int]:
        parameters = operation.get("parameters", [])
        has_body = "requestBody" in operation
        security = operation.get("security") or []
        statuses = []
        if has_body or any(p["in"] in ("query", "header") for p in parameters):
            statuses.append(400)
        if security and {} not in security:
            statuses += [401, 403]
        if any(p["in"] == "path" for p in parameters):
            statuses.append(404)
        if self.method == "DELETE" or any(
            p["in"] == "header" and p["name"] == IDEMPOTENCY_HEADER for p in parameters
        ):
            statuses.append(409)
        if has_body:
            statuses.append(415)
        if getattr(self.view, "throttle_classes", None):
            statuses.append(429)
        return statuses

    def _error_ref(self):
        return self.resolve_serializer(ErrorSerializer, "response").ref

    def _messages_ref(self):
        return self.resolve_serializer(ValidationErrorSerializer, "response").ref
