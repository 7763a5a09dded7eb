"""Reads of CSV imports and their row errors."""

from __future__ import annotations

from django.db.models import QuerySet

from contacts.models import (
    Source,
)


def contact_import_list() -> QuerySet:
    from contacts.imports.models import ContactImport

    return ContactImport.objects.select_related("source", "created_by", "committed_by")


def import_row_errors(*, contact_import_id: int) -> QuerySet:
    """An import's row errors in file order (importrowerror_line_idx)."""
    from contacts.imports.models import ImportRowError

    return ImportRowError.objects.filter(contact_import_id=contact_import_id).order_by("line", "id")


def import_sources() -> QuerySet[Source]:
    from contacts.models import SourceKind

    return Source.objects.filter(kind=SourceKind.IMPORT)
