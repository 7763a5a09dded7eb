"""Reads that may lag a little: API list pages and exports read from a replica when one is
configured (`DATABASE_REPLICA_URL`, the `replica` alias), everything else from the primary.

Which reads go to the replica is decided by the code that makes them, not by model: a list
page (`crm.api.CreatedCursorPagination`) and each chunk of an export run inside
`replica_reads()`. Inside a transaction the primary is always read, so a write and the reads
it depends on see the same rows. Without the alias the router answers None: Django's default.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TypeVar

from django.db import DEFAULT_DB_ALIAS, connections

REPLICA_ALIAS = "replica"

_replica_reads: ContextVar[bool] = ContextVar("replica_reads", default=False)

T = TypeVar("T")


def replica_alias() -> str | None:
    """The replica's alias when one is configured."""
    return REPLICA_ALIAS if REPLICA_ALIAS in connections.settings else None


@contextmanager
def replica_reads() -> Iterator[None]:
    """Reads made inside may go to the replica."""
    token = _replica_reads.set(True)
    try:
        yield
    finally:
        _replica_reads.reset(token)


def replica_iter(items: Iterable[T]) -> Iterator[T]:
    """`items`, each one produced inside `replica_reads()`: for a streamed response whose
    queries run while it is sent. The flag is set only while an item is made, never
    between them, so nothing else the server does meanwhile reads the replica."""
    iterator = iter(items)
    while True:
        with replica_reads():
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item


class ReplicaRouter:
    """Routes the reads made inside `replica_reads()` to the replica; writes, migrations and
    every other read stay on the primary."""

    def db_for_read(self, model, **hints):
        alias = replica_alias()
        if alias is None or not _replica_reads.get():
            return None
        if connections[DEFAULT_DB_ALIAS].in_atomic_block:
            return None
        return alias

    def db_for_write(self, model, **hints):
        return None

    def allow_relation(self, obj1, obj2, **hints):
        return True  # the replica holds the same rows as the primary

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db != REPLICA_ALIAS
