"""One consistent state of the database for reads that are compared with each other.

A check that reads the counters, then replays the ledger, then recounts the contacts,
each in its own statement, sees a different committed state in each while writers run:
a change that commits between two of its reads shows in one and not in the other, and
the check reports a disagreement that never existed. `read_snapshot` runs such reads in
one transaction that sees one state:

- PostgreSQL: `REPEATABLE READ, READ ONLY` — every statement reads the snapshot taken by
  the first, and a write inside is refused rather than done;
- SQLite: one transaction. Its writers are serialised (IMMEDIATE transactions), and a
  transaction's reads see one state of the file (WAL: from its first read on).

Inside a transaction the caller already opened, the isolation level can no longer be
set: the reads join that transaction, whose own level decides what they see.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction


@contextmanager
def read_snapshot() -> Iterator[None]:
    """Run the block's reads against one state of the database; the block writes nothing."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # Must be the transaction's first statement.
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield
