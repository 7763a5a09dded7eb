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


def contact_dependent_relations() -> list:
    """The relations whose rows go with a deleted contact (`on_delete=CASCADE`): its own
    records — enrollments, engagement events, submissions, memberships… The ledger, sends,
    unsubscriptions and communications keep their rows (no constraint to the contact)."""
    from django.db.models import CASCADE

    return [
        relation
        for relation in Contact._meta.get_fields(include_hidden=True)
        if relation.one_to_many and relation.auto_created and relation.on_delete is CASCADE
    ]


def contact_dependent_counts(*, contacts: QuerySet[Contact]) -> dict[str, int]:
    """How many rows of each kind deleting `contacts` takes with them (kinds with none are
    left out), by the related model's plural name: one COUNT a kind, over its contact index."""
    counts = {}
    for relation in contact_dependent_relations():
        model = relation.related_model
        count = model._default_manager.filter(
            **{f"{relation.field.name}__in": contacts.order_by().values("pk")}
        ).count()
        if count:
            counts[str(model._meta.verbose_name_plural)] = count
    return counts
