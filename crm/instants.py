"""Instants given from outside (API parameters and bodies, admin forms, commands): one rule.

An instant may carry any UTC offset Python represents (up to ±23:59, which ISO 8601 and
RFC 3339 allow); it is converted to UTC before it reaches a query. The instant is the same,
only its notation changes, so nothing is lost — and nothing database-specific leaks out:
PostgreSQL refuses an offset past ±15:59 in a timestamp literal ("time zone displacement
out of range"), which would otherwise be a 500 on PostgreSQL and an answer on SQLite.

What cannot be converted is refused with a message naming the value: an instant whose UTC
equivalent falls outside the years 1–9999 (9999-12-31T23:00:00-16:00 is in the year
10000 in UTC).

On PostgreSQL the connection also sends every aware datetime in UTC
(`register_utc_datetimes`), so a datetime that reaches a query by another road (a lookup
typed into an admin URL) cannot fail on its offset either.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools

from django import forms
from django.core.exceptions import ValidationError


class InstantOutOfRange(ValueError):
    """The instant has no UTC equivalent that a datetime can hold."""


def instant_utc(value: dt.datetime) -> dt.datetime:
    """An aware `value` in UTC (a naive one is taken as UTC, as the API documents)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    if value.tzinfo is dt.UTC:
        return value
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise InstantOutOfRange(
            f"{value.isoformat()} is out of range: in UTC it falls outside the years 1 to 9999."
        ) from None


class InstantField(forms.DateTimeField):
    """A date-time form field whose value is in UTC (ISO 8601, any offset up to ±23:59).

    A value without an offset is in the current time zone, as Django's own field reads it.
    ISO 8601 only: no locale formats ("10/25/2026 14:30" means different days to different
    people).
    """

    input_formats = ()  # Django's field tries ISO 8601 (parse_datetime) before these
    default_error_messages = {
        "invalid": "Enter a valid ISO 8601 date-time, e.g. 2026-01-31T09:00:00Z.",
    }

    def to_python(self, value):
        result = super().to_python(value)
        if result is None:
            return None
        try:
            return instant_utc(result)
        except InstantOutOfRange as error:
            raise ValidationError(str(error), code="out_of_range") from error


@functools.cache
def _utc_datetime_dumper():
    """psycopg's text dumper for aware datetimes, sending them in UTC."""
    from psycopg.types.datetime import DatetimeDumper

    class UtcDatetimeDumper(DatetimeDumper):
        def dump(self, obj: dt.datetime):
            # Out of range: the database says so (every input path has refused it already).
            with contextlib.suppress(OverflowError):
                obj = obj.astimezone(dt.UTC)
            return super().dump(obj)

    return UtcDatetimeDumper


def register_utc_datetimes(sender, connection, **kwargs) -> None:
    """`connection_created` receiver: PostgreSQL connections dump aware datetimes in UTC.

    Django's psycopg backend sends a datetime as text with its own offset; PostgreSQL
    accepts offsets up to ±15:59 only. Converting to UTC first is exact (the same instant).
    Binary parameters (`%b`, crm.sql.server_bound_cursor) never carry an offset.
    """
    if connection.vendor != "postgresql":
        return
    import psycopg

    if isinstance(connection.connection, psycopg.Connection):
        connection.connection.adapters.register_dumper(dt.datetime, _utc_datetime_dumper())
