"""Trigram indexes for the contacts search by first name, last name and company.

The admin's and the API's search match names and companies with `istartswith`, which
Django writes as `UPPER(col::text) LIKE UPPER('term%')` on PostgreSQL. A GIN index of
pg_trgm over the same expression `UPPER(col)` answers it (and a `LIKE '%term%'` as well)
without reading the table: at 1,000,000 contacts a search that matches a few hundred
contacts takes milliseconds instead of a full scan.

PostgreSQL only. The indexes are not part of the model state (Meta.indexes would have
SQLite try to build a GIN index), so SQLite keeps its plain scans, and makemigrations
stays quiet. The email prefix needs nothing new: emails are stored lower-cased, and the
unique field's `varchar_pattern_ops` twin (Django's `…_like` index) serves `LIKE 'ann%'`.
"""

from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations

SEARCH_INDEXES = {
    "contact_first_name_trgm": "first_name",
    "contact_last_name_trgm": "last_name",
    "contact_company_trgm": "company",
}


def add_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, column in SEARCH_INDEXES.items():
        # Written out: Django renders GinIndex(OpClass(Upper(column))) with the operator
        # class inside a second pair of parentheses, which PostgreSQL refuses.
        schema_editor.execute(
            f"CREATE INDEX {name} ON contacts_contact USING gin (UPPER({column}) gin_trgm_ops)"
        )


def remove_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in SEARCH_INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0019_bulk_status_jobs"),
    ]

    operations = [
        # CREATE EXTENSION pg_trgm (a trusted extension: the database owner may create it);
        # the operation does nothing on other databases.
        TrigramExtension(),
        migrations.RunPython(add_indexes, remove_indexes, elidable=False),
    ]
