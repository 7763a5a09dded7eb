"""Reads of contacts and sources."""

from __future__ import annotations

from django.db.models import QuerySet

from contacts.models import (
    Contact,
    Source,
)
from crm.rows import row_get_or_create


def contact_list() -> QuerySet[Contact]:
    return Contact.objects.select_related("source")


def source_list() -> QuerySet[Source]:
    return Source.objects.all()


def source_for_manual_entry() -> Source:
    """The source recorded on contacts created by hand in the admin or the API."""
    from contacts.models import SourceKind

    return row_get_or_create(
        Source,
        lookup={"name": "Created by hand"},
        defaults={"kind": SourceKind.MANUAL, "default_marketing": False},
    )[0]


def contact_exists(*, contact_id: int) -> bool:
    return Contact.objects.filter(pk=contact_id).exists()
