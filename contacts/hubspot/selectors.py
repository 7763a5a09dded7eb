"""Reads of the HubSpot-compatible API: contacts by HubSpot id or email, and list pages."""

from __future__ import annotations

import re
from collections.abc import Iterable

from contacts.models import Contact, normalise_email
from contacts.selectors import contact_list

ID_PROPERTY = "hs_object_id"
EMAIL_PROPERTY = "email"
ID_PROPERTIES = (ID_PROPERTY, EMAIL_PROPERTY)
# A HubSpot id is a string of digits; ours are BIGINTs, so a longer one names no contact.
_ID_RE = re.compile(r"^[0-9]{1,18}$")


def contact_key(value: str, id_property: str) -> int | str | None:
    """What an id names: a contact id, a normalised email, or None (nothing can match)."""
    if "\x00" in value:  # no contact's email has one, and PostgreSQL refuses it in a query
        return None
    if id_property == EMAIL_PROPERTY:
        return normalise_email(value) or None
    return int(value) if _ID_RE.match(value) else None


def hubspot_contacts_by_keys(
    *, values: Iterable[str], id_property: str = ID_PROPERTY
) -> dict[str, Contact]:
    """The contacts these ids (or emails) name, keyed by the value as given; one query.

    A value that names no contact is simply absent.
    """
    keys = {value: contact_key(value, id_property) for value in values}
    wanted = {key for key in keys.values() if key is not None}
    if not wanted:
        return {}
    lookup = "email__in" if id_property == EMAIL_PROPERTY else "pk__in"
    found = {
        (c.email if id_property == EMAIL_PROPERTY else c.pk): c
        for c in contact_list().filter(**{lookup: wanted})
    }
    return {value: found[key] for value, key in keys.items() if key in found}


def hubspot_contact_get(*, value: str, id_property: str = ID_PROPERTY) -> Contact | None:
    return hubspot_contacts_by_keys(values=[value], id_property=id_property).get(value)


def hubspot_contacts_page(*, after: int, limit: int) -> tuple[list[Contact], bool]:
    """A page of contacts by id, after the id `after`, and whether more follow.

    Keyset pagination on the primary key: one query whatever the page's depth, no COUNT.
    """
    rows = list(contact_list().filter(pk__gt=after).order_by("pk")[: limit + 1])
    return rows[:limit], len(rows) > limit
