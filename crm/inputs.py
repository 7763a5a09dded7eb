"""What every interface checks in text and JSON from outside, before anything reads it.

Two rules, for the API (crm.parsers, `JSONInputField`), the admin's JSON fields
(`JSONInputFormField`, the default for every model JSONField in the admin) and the views
that parse JSON themselves (`json_input_loads`):

* **JSON is nested at most `JSON_MAX_DEPTH` levels.** Python's parser recurses once a
  level and stops with a RecursionError about a thousand levels down (a 4 KB body), and
  code that walks the value later recurses too. No input of this API needs more than a
  handful of levels (a criteria tree is six); anything deeper is refused whole.
* **Text holds no NUL character** (U+0000). PostgreSQL refuses it in text and jsonb, so
  it would fail at the database (a 500) — on SQLite it would be stored and fail later.
  No field has a use for it, so it is refused where the request is read, naming where.

Both checks are iterative (no recursion) and cheap: the NUL walk runs only when the text
holds an escaped NUL, and the depth walk only when the text has more brackets than the limit.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from rest_framework import serializers

JSON_MAX_DEPTH = 64  # levels of arrays and objects, the outermost one included

NUL = "\x00"


class JSONInputError(ValueError):
    """JSON (or text) this project refuses: nested too deep, or holding a NUL character."""


def _too_deep() -> JSONInputError:
    return JSONInputError(f"JSON nested deeper than {JSON_MAX_DEPTH} levels.")


def nul_message(where: str) -> str:
    """The refusal of a NUL found at `where` (e.g. "events[3].external_id", "The URL")."""
    return f"{where or 'The text'} must not contain the NUL character (\\u0000)."


def _member(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def json_input_check(value: Any) -> None:
    """Refuse a parsed value nested deeper than JSON_MAX_DEPTH or holding a NUL in any
    string (key or value); the message names the place (e.g. `events[3].external_id`)."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                raise JSONInputError(nul_message(path))
            continue
        if isinstance(item, dict):
            if depth >= JSON_MAX_DEPTH:
                raise _too_deep()
            for key, child in item.items():
                if isinstance(key, str) and NUL in key:
                    raise JSONInputError(nul_message(_member(path, repr(key))))
                stack.append((child, depth + 1, _member(path, key)))
        elif isinstance(item, list):
            if depth >= JSON_MAX_DEPTH:
                raise _too_deep()
            stack.extend((child, depth + 1, f"{path}[{i}]") for i, child in enumerate(item))


def json_input_loads(text: str | bytes, **kwargs) -> Any:
    """`json.loads` with this project's limits: JSONInputError when nested too deep or
    holding a NUL; json.JSONDecodeError (a ValueError too) when it is not JSON."""
    if isinstance(text, bytes | bytearray):
        text = text.decode()
    try:
        value = json.loads(text, **kwargs)
    except RecursionError:
        raise _too_deep() from None
    # Cheap tests on the text first: every level needs a bracket, and a NUL in a string
    # is written \u0000 (a raw NUL is not valid JSON). Only then walk the value.
    if text.count("[") + text.count("{") > JSON_MAX_DEPTH or "\\u0000" in text:
        json_input_check(value)
    return value


class JSONInputFormMixin:
    """For a Django form JSON field: refuse JSON too deep or holding a NUL with a message
    on the field, instead of a RecursionError (500) or a database error when it is saved."""

    def _input_error(self, value) -> str | None:
        if self.disabled or not isinstance(value, str) or not value.strip():
            return None
        try:
            json_input_loads(value, cls=self.decoder)
        except JSONInputError as error:
            return str(error)
        except ValueError:
            return None  # not JSON: the field's own message says so
        return None

    def to_python(self, value):
        message = self._input_error(value)
        if message:
            raise ValidationError(message, code="invalid")
        return super().to_python(value)

    def bound_data(self, data, initial):
        # Re-displaying the form parses the input again: show it as typed instead.
        if self._input_error(data):
            return forms.fields.InvalidJSONInput(data)
        return super().bound_data(data, initial)


class JSONInputFormField(JSONInputFormMixin, forms.JSONField):
    """Django's JSON form field with this project's limits (the admin's default)."""


def admin_json_fields_checked() -> None:
    """Every admin form's JSON fields get the input rules: the admin's default form field
    for a model JSONField becomes `JSONInputFormField`, so no admin can forget it.

    The admin copies its defaults into each ModelAdmin when it is registered, which the
    admin's own app does (autodiscover) before this app is ready: the admins registered
    already are given it too, under any override of their own.
    """
    from django.contrib import admin
    from django.contrib.admin import options
    from django.db import models

    checked = {"form_class": JSONInputFormField}
    options.FORMFIELD_FOR_DBFIELD_DEFAULTS[models.JSONField] = checked
    for model_admin in admin.site._registry.values():
        own = model_admin.formfield_overrides.get(models.JSONField, {})
        model_admin.formfield_overrides[models.JSONField] = {**checked, **own}


class JSONInputField(serializers.JSONField):
    """DRF's JSON field with this project's limits, for a JSON string sent as a form field
    (a JSON body is checked whole by crm.parsers before any field sees it)."""

    def to_internal_value(self, data):
        if self.binary or getattr(data, "is_json_string", False):
            try:
                return json_input_loads(data, cls=self.decoder)
            except JSONInputError as error:
                raise serializers.ValidationError(str(error)) from error
            except ValueError:
                self.fail("invalid")
        return super().to_internal_value(data)
