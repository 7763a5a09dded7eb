"""The API's request parsers (REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]): DRF's, plus the
input rules of crm.inputs, so every endpoint gets them whatever its serializers do.

* JSON bodies are nested at most `JSON_MAX_DEPTH` levels and hold no NUL character;
* form and multipart fields hold no NUL character (uploaded files are the importer's to
  read: a CSV row with a NUL is a row error there, not a refused upload).

Each refusal is a 400 ParseError whose message says what and where.
"""

from __future__ import annotations

import codecs

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json

from crm.inputs import NUL, JSONInputError, json_input_loads, nul_message


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser (strict: no NaN or Infinity) with the nesting limit and no NUL."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
            parse_constant = json.strict_constant if self.strict else None
            return json_input_loads(text, parse_constant=parse_constant)
        except JSONInputError as error:
            raise ParseError(str(error)) from error
        except ValueError as error:
            raise ParseError(f"JSON parse error - {error}") from error


def _check_fields(data) -> None:
    """Form fields (a QueryDict): no NUL in a name or a value."""
    for name, values in data.lists():
        if NUL in name:
            raise ParseError(nul_message(f"The name of the field {name!r}"))
        for value in values:
            if isinstance(value, str) and NUL in value:
                raise ParseError(nul_message(name))


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        _check_fields(data)
        return data


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        result = super().parse(stream, media_type, parser_context)
        _check_fields(result.data)
        for name, upload in result.files.items():
            if NUL in (upload.name or ""):
                raise ParseError(nul_message(f"The file name of {name!r}"))
        return result
