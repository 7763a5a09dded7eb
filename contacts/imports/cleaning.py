"""CSV import: the rules that clean one column's raw values, a value or a batch at a time.

`value_cleaner` turns one raw cell into (value or None, error message or None). The
staging reads a file in batches, and calling a Python function for every cell was most
of an import's Python time, so `column_cleaner` cleans a batch's column at once: it
checks the whole column with builtins (lengths, a NUL, the email pattern, the choice
table) and asks the value cleaner only of the cells those checks do not pass. Both give
the same values and the same messages.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

from django.core.validators import validate_email

from contacts.imports.hubspot import hubspot_cleaner
from contacts.imports.parsing import _EMAIL_FAST, _FALSE, _TRUE, ImportField, _key
from crm.inputs import NUL

ValueCleaner = Callable[[str], tuple[object, str | None]]
# raws → (values, [(index in the batch, error message)]); a cell with an error is None
ColumnCleaner = Callable[[list[str]], tuple[list, list[tuple[int, str]]]]

# Addresses that each pass _EMAIL_FAST, one per line (no address holds a line break).
_EMAILS_FAST = re.compile(f"(?:{_EMAIL_FAST.pattern})(?:\n(?:{_EMAIL_FAST.pattern}))*+")


def value_cleaner(spec: ImportField, zone=None) -> ValueCleaner:
    """A function raw → (value or None, error message or None) for one column."""
    if spec.kind in ("record_id", "status", "instant"):
        return hubspot_cleaner(spec, zone or dt.UTC)
    if spec.kind == "email":

        def clean(raw: str):
            value = raw.strip().lower()
            if not value:
                return None, "The email is empty: every row needs one."
            if len(value) <= spec.max_length and _EMAIL_FAST.fullmatch(value):
                return value, None
            if len(value) > spec.max_length:
                return None, f"The email is longer than {spec.max_length} characters."
            try:
                validate_email(value)
            except Exception:
                return None, f"“{raw.strip()[:100]}” is not a valid email address."
            return value, None

    elif spec.kind == "text":
        limit = spec.max_length

        def clean(raw: str):
            value = raw.strip()
            if not value:
                return None, None
            if len(value) > limit:
                return None, f"Longer than {limit} characters ({len(value)})."
            if NUL in value:  # PostgreSQL cannot store it (the other kinds never keep one)
                return None, "Contains a NUL character (\\0), which cannot be stored."
            return value, None

    elif spec.kind == "choice":
        return _choice_cleaner(spec, dict(spec.choices))

    else:  # flag: an import may record an unsubscribe or a bounce, never clear one

        def clean(raw: str):
            value = raw.strip().lower()
            if value in _TRUE:
                return True, None
            if value in _FALSE:
                return None, None
            return None, f"“{raw.strip()[:100]}” is not yes or no."

    return clean


def _choice_cleaner(spec: ImportField, table: dict[str, str]) -> ValueCleaner:
    """A choice column's cleaner over `table` (raw or key → value), which learns spellings."""
    allowed = ", ".join(dict.fromkeys(spec.choices.values()))

    def clean(raw: str):
        value = table.get(raw)
        if value is not None:
            return value, None
        if not raw.strip():
            return None, None
        value = table.get(_key(raw))
        if value is None:
            return None, f"“{raw.strip()[:100]}” is not a {spec.label.lower()} ({allowed})."
        if len(table) < 1_000:  # remember the spelling: the same few values repeat
            table[raw] = value
        return value, None

    return clean


def _each(clean: ValueCleaner, raws: list[str], values: list, indexes) -> list[tuple[int, str]]:
    """The value cleaner asked of the cells at `indexes`: `values` set in place, the errors."""
    errors = []
    for index in indexes:
        values[index], message = clean(raws[index])
        if message is not None:
            errors.append((index, message))
    return errors


def column_cleaner(spec: ImportField, zone=None) -> ColumnCleaner:
    """A function raws → (values, errors) for one column of a batch (module docstring)."""
    if spec.kind == "choice":
        # The column and its per-value cleaner share one table, so a spelling the cleaner
        # learns is looked up at C speed in the next batches.
        table = dict(spec.choices)
        clean = _choice_cleaner(spec, table)

        def choice_column(raws: list[str]):
            values = list(map(table.get, raws))
            if None not in values:
                return values, []
            return values, _each(
                clean, raws, values, (i for i, v in enumerate(values) if v is None)
            )

        return choice_column
    clean = value_cleaner(spec, zone)
    if spec.kind == "email":
        limit, fast = spec.max_length, _EMAIL_FAST.fullmatch

        def column(raws: list[str]):
            values = [raw.strip().lower() for raw in raws]
            # One match over the column, its values a line each: no pattern call per value.
            # A value with a line break of its own would be two lines: the count rules it out.
            joined = "\n".join(values)
            if (
                joined.count("\n") == len(values) - 1
                and _EMAILS_FAST.fullmatch(joined)
                and max(map(len, values), default=0) <= limit
            ):
                return values, []
            passed = [len(value) <= limit and fast(value) for value in values]
            return values, _each(clean, raws, values, (i for i, ok in enumerate(passed) if not ok))

    elif spec.kind == "text":
        limit = spec.max_length

        def column(raws: list[str]):
            values = [raw.strip() or None for raw in raws]
            if max(map(len, raws), default=0) <= limit and NUL not in "".join(raws):
                return values, []
            return values, _each(clean, raws, values, range(len(raws)))

    else:

        def column(raws: list[str]):
            values: list = [None] * len(raws)
            return values, _each(clean, raws, values, range(len(raws)))

    return column
