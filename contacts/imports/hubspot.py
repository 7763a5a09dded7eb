"""A HubSpot contacts export's own values: record ids, marketing statuses and dates.

The columns are found by the labels of the property table (`contacts.hubspot.mapping`);
these are the cleaners of the values only an export holds, in the staging pass's shape
(raw → (value or None, error message or None)). Dates are staged as UTC text,
"YYYY-MM-DD HH:MM:SS", which both databases read as a timestamp.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo

from contacts.hubspot.mapping import EXPORT_MARKETING_VALUES, MARKETING_PENDING
from contacts.imports.parsing import ImportField, _key
from contacts.status.rules import MARKETING, NON_MARKETING

# The staged values of "Marketing contact status".
FILE_MARKETING, FILE_NON_MARKETING, FILE_PENDING = MARKETING, NON_MARKETING, MARKETING_PENDING

_STATUS_VALUES = {
    _key(text): (
        FILE_PENDING
        if ours == MARKETING_PENDING
        else (FILE_MARKETING if ours is True else FILE_NON_MARKETING)
    )
    for text, ours in EXPORT_MARKETING_VALUES.items()
}
_RECORD_ID = re.compile(r"[0-9]{1,20}")
_EPOCH_MS = re.compile(r"[0-9]{12,14}")  # HubSpot's API instants, milliseconds since 1970
STAGED_INSTANT = "%Y-%m-%d %H:%M:%S"


def hubspot_cleaner(spec: ImportField, zone: zoneinfo.ZoneInfo):
    """The cleaner of one HubSpot-only column; a date without a UTC offset is read in `zone`
    (the account's time zone: HubSpot writes exports in the portal's)."""
    if spec.kind == "record_id":

        def clean(raw: str):
            value = raw.strip()
            if not value:
                return None, None
            if _RECORD_ID.fullmatch(value):
                return value.lstrip("0") or "0", None
            return None, f"“{value[:100]}” is not a HubSpot record ID (a number)."

        return clean

    if spec.kind == "status":
        allowed = "“Marketing contact”, “Non-marketing contact” or “Set to non-marketing contact at the next update”"

        def clean(raw: str):
            if not raw.strip():
                return None, None
            value = _STATUS_VALUES.get(_key(raw))
            if value is None:
                return None, f"“{raw.strip()[:100]}” is not a marketing contact status ({allowed})."
            return value, None

        return clean

    def clean(raw: str):  # instant
        value = raw.strip()
        if not value:
            return None, None
        try:
            if _EPOCH_MS.fullmatch(value):
                instant = dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC)
            else:
                instant = dt.datetime.fromisoformat(value.replace("/", "-"))
                if instant.tzinfo is None:
                    instant = instant.replace(tzinfo=zone)
            staged = instant.astimezone(dt.UTC).strftime(STAGED_INSTANT)
        except (ValueError, OverflowError, OSError):
            return None, (
                f"“{value[:100]}” is not a date HubSpot exports (like 2024-03-05 14:22, "
                "in the account's time zone, or 2024-03-05T14:22:00Z)."
            )
        if not "1900" <= staged[:4] <= "9998":
            return None, f"“{value[:100]}” is out of range (years 1900–9998)."
        return staged, None

    return clean
