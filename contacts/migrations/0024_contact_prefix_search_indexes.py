"""Prefix indexes for the contacts search by first name, last name and company, in place
of the trigram indexes of 0020.

The admin's and the API's search match the start of a name or a company (`istartswith`,
which Django writes as `UPPER(col::text) LIKE UPPER('term%')` on PostgreSQL). A btree
index with `text_pattern_ops` over the same expression answers such a prefix as a range
of its keys, in time that grows with the log of the table and the matches it returns.
The trigram indexes answered it by intersecting the posting lists of the term's trigrams,
which grow with the table: at 10,000,000 contacts each list took 45–97 ms to read for a
term whose prefix range holds a few rows (docs/BENCHMARKS.md, "The lists at 10M"). A
btree entry is also cheaper to add than a trigram list's, on every new contact.

Each index's expression keeps 3,000 values of statistics, not PostgreSQL's default 100.
A prefix's estimate is the share of the histogram's values it starts (at least 0.01 %),
so with 100 values a prefix that starts one of them, or none, is estimated at 1 % of the
table: at 10,000,000 contacts a company prefix matching 3,237 contacts was planned as
100,000, and PostgreSQL walked the primary key newest first, testing 175,000 rows for
the page's 50 (92 ms), instead of reading the 3,237 through the index and sorting them
(16 ms). With 1,000 values the same prefix came out at 1,000 or 10,000 contacts,
depending on ANALYZE's sample; with 3,000 every company of the benchmark's 3,000 is a
most common value and its estimate exact (3,222), and in a column of more values each
step of the histogram is 0.03 % of the table. The price is ANALYZE's sample (300 rows per
value): 900,000 rows, 18 s at 10,000,000 contacts (docs/BENCHMARKS.md).

PostgreSQL only, like 0020: SQLite keeps its plain scans. The pg_trgm extension stays
installed; nothing of the project reads it any more.
"""

from django.db import migrations

from contacts.migrations._prefix_indexes import STATISTICS, replace_indexes

COLUMNS = ("first_name", "last_name", "company")
# Each index by name: what follows `ON contacts_contact` in its CREATE INDEX.
PREFIX_INDEXES = {f"contact_{c}_prefix": f"(UPPER({c}::text) text_pattern_ops)" for c in COLUMNS}
TRIGRAM_INDEXES = {f"contact_{c}_trgm": f"USING gin (UPPER({c}) gin_trgm_ops)" for c in COLUMNS}


def to_prefix(apps, schema_editor):
    replace_indexes(schema_editor, PREFIX_INDEXES, TRIGRAM_INDEXES, STATISTICS)


def to_trigram(apps, schema_editor):
    replace_indexes(schema_editor, TRIGRAM_INDEXES, PREFIX_INDEXES)


class Migration(migrations.Migration):
    dependencies = [
        ("contacts", "0023_import_staged_table"),
    ]

    operations = [
        migrations.RunPython(to_prefix, to_trigram, elidable=False),
    ]
