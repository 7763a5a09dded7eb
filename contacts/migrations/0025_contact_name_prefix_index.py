"""One prefix index over the first and the last name, in place of the first name's alone.

The search "first last" (the API's `?search=Karen Moyer`) matches contacts whose first
name starts with the first word and whose last name with the second. Over two indexes
of one column each PostgreSQL reads every contact of each prefix and intersects the two
bitmaps: at 10,000,000 contacts the 55,000 first names "Karen…" and the last names
"Moyer…" for the 26 contacts that have both, twice the time it takes at 1,000,000. Over
one index of both columns it reads the first name's range of keys and tests the last
name in the index's own entries, never building a bitmap of the 55,000.

The first name alone is the index's leading column, so its prefix search reads the same
range as before, and the table keeps as many indexes as it had: one entry for each new
contact, none on a status flip (docs/BENCHMARKS.md, "The indexes of contacts_contact").
Both columns keep 3,000 values of statistics, as 0024's indexes do.

PostgreSQL only, like 0024.
"""

from django.db import migrations

from contacts.migrations import _prefix_indexes as prefix

OLD = {"contact_first_name_prefix": "(UPPER(first_name::text) text_pattern_ops)"}
NEW = {
    "contact_name_prefix": "(UPPER(first_name::text) text_pattern_ops, "
    "UPPER(last_name::text) text_pattern_ops)"
}


def to_name(apps, schema_editor):
    prefix.replace_indexes(schema_editor, NEW, OLD, prefix.STATISTICS)


def to_first_name(apps, schema_editor):
    prefix.replace_indexes(schema_editor, OLD, NEW, prefix.STATISTICS)


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0024_contact_prefix_search_indexes"),
    ]

    operations = [
        migrations.RunPython(to_name, to_first_name, elidable=False),
    ]
