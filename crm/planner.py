"""PostgreSQL planner settings scoped to one block, and the reads that use them.

A list over millions of contacts must answer in tens of milliseconds whatever PostgreSQL
guesses about its rows. Two guesses go wrong at scale: a count that reads every
candidate of an index before it can stop at its cap and, with LIMIT, a walk
of the primary key newest first that tests each row, taken when the planner believes the
matches are many and spread out. The admin's counts (crm.admin) and the searched lists of
the admin and the API read through these helpers; elsewhere (SQLite) they change nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from django.db import OperationalError, connections, transaction

T = TypeVar("T")

# How long a searched page is read the planner's way before it is read through the
# search's own indexes instead.
SEARCH_READ_TIMEOUT_MS = 100
QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement past its time limit


@contextmanager
def planner_settings(using: str, **values: str) -> Iterator[None]:
    """PostgreSQL settings for the statements inside the block alone (set_config(…, true) in
    a transaction or savepoint); elsewhere nothing is set. Inside an outer transaction the
    previous values are put back after the block; an error's rollback to the savepoint
    puts them back by itself."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        yield
        return
    outer = connection.in_atomic_block
    with transaction.atomic(using=using), connection.cursor() as cursor:
        previous = {}
        for name, value in values.items():
            cursor.execute(
                "SELECT current_setting(%s), set_config(%s, %s, true)", [name, name, value]
            )
            previous[name] = cursor.fetchone()[0]
        yield
        if outer:
            for name, value in previous.items():
                cursor.execute("SELECT set_config(%s, %s, true)", [name, value])


def within_time(using: str, timeout_ms: int, run: Callable[[], T]) -> T | None:
    """`run()` with each statement limited to `timeout_ms` on PostgreSQL; None when one ran
    out of time (elsewhere `run()` always finishes)."""
    try:
        with planner_settings(using, statement_timeout=str(timeout_ms)):
            return run()
    except OperationalError as error:
        if getattr(error.__cause__, "sqlstate", None) != QUERY_CANCELED:
            raise
        return None


def read_searched(using: str, run: Callable[[], T]) -> T:
    """A searched page: read the planner's way if that takes under SEARCH_READ_TIMEOUT_MS,
    else again with index walks off, so through the search's own indexes, sorted.

    With LIMIT the planner may walk the primary key newest first and test each row: right
    when the matches are many and spread out ("Watts", a common company: 28 ms over
    10,000,000 contacts), seconds when they are few or sit in one stretch of ids
    ("allison.jo": 0.95 s that way, 0.13 s through the indexes)."""
    rows = within_time(using, SEARCH_READ_TIMEOUT_MS, run)
    if rows is not None:
        return rows
    with planner_settings(using, enable_indexscan="off"):
        return run()
