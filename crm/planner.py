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
# search's own indexes instead. Not less: a filtered search that the primary key's walk
# answers in 35–45 ms at 10,000,000 contacts ("marketing, lead, Karen") took 360 ms
# through the indexes, its lifecycle bitmap holding 3,500,000 leads.
SEARCH_READ_TIMEOUT_MS = 100
# The planner's cost of a page read out of order, for searched pages. PostgreSQL's default
# (4, a spinning disk's) makes the search's indexes and their scattered rows look dearer
# than walking the primary key newest first and testing every row, which is the slow
# way whenever the matches are few; 1.1 is the usual setting where the table is cached or
# on SSD. At 1,000,000 contacts, "marketing, lead, Karen" went from a 38 ms walk to 19 ms.
SEARCH_RANDOM_PAGE_COST = "1.1"
# No parallel workers for a searched page: starting them and merging their rows cost more
# than they save on a page of 25–50 rows. Walking the primary key for "marketing, lead,
# Karen" at 10,000,000 contacts took 36 ms with two workers, 21 ms without.
SEARCH_PARALLEL_WORKERS = "0"
# What reading one match through the search's indexes costs (its page fetched out of
# order, then the matches sorted), in rows tested by a walk of the primary key newest
# first. Measured: "Karen" at 1,000,000 contacts, 5,500 matches, 7 ms walked (4,500 rows)
# and 13 ms through the indexes; a company at 10,000,000, 3,237 matches, 52–71 ms walked
# (89,960 rows) and 5.5–13 ms through its index: 2–4 rows' worth a match.
INDEX_READ_ROW_COST = 4
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
        # One statement for every setting: each current value, then the new one set.
        cursor.execute(
            "SELECT " + ", ".join(["current_setting(%s), set_config(%s, %s, true)"] * len(values)),
            [p for name, value in values.items() for p in (name, name, value)],
        )
        previous = dict(zip(values, cursor.fetchone()[::2], strict=True))
        yield
        if outer:
            cursor.execute(
                "SELECT " + ", ".join(["set_config(%s, %s, true)"] * len(previous)),
                [p for item in previous.items() for p in item],
            )


def within_time(using: str, timeout_ms: int, run: Callable[[], T], **settings: str) -> T | None:
    """`run()` with each statement limited to `timeout_ms` on PostgreSQL, and `settings` set
    for it; None when one ran out of time (elsewhere `run()` always finishes)."""
    try:
        with planner_settings(using, statement_timeout=str(timeout_ms), **settings):
            return run()
    except OperationalError as error:
        if getattr(error.__cause__, "sqlstate", None) != QUERY_CANCELED:
            raise
        return None


def indexes_read_less(matches: int, rows_wanted: int, table_rows: int) -> bool:
    """Whether reading all of a search's `matches` through its indexes costs less than
    walking the table newest first until `rows_wanted` of them are found: with the matches
    spread over the table, the walk tests rows_wanted × table_rows / matches rows."""
    return matches * matches * INDEX_READ_ROW_COST < rows_wanted * table_rows


def read_searched(using: str, run: Callable[[], T], *, through_indexes: bool = False) -> T:
    """A searched page: read the planner's way (with SEARCH_RANDOM_PAGE_COST and
    SEARCH_PARALLEL_WORKERS) if that takes under SEARCH_READ_TIMEOUT_MS, else again with
    index walks off, so through the search's own indexes, sorted.

    With LIMIT the planner may walk the primary key newest first and test each row: right
    when the matches are many and spread out ("Watts", a common company: 28 ms over
    10,000,000 contacts), seconds when they are few or sit in one stretch of ids
    ("allison.jo": 0.95 s that way, 0.13 s through the indexes).

    `through_indexes`: the caller has counted the search's matches (the admin's list, with
    no filter beside the search) and found them few enough that reading all of them
    through the search's indexes costs less than the walk (`indexes_read_less`): that is
    the only read. The planner guesses the walk's cost from its estimate of the matches,
    and a wrong guess is dear: a company of 3,237 contacts among 10,000,000, estimated at
    4,566, walked newest first took 52–71 ms (89,960 rows tested), and 5.5–13 ms through
    its index."""
    if through_indexes:
        with planner_settings(
            using, enable_indexscan="off", max_parallel_workers_per_gather=SEARCH_PARALLEL_WORKERS
        ):
            return run()
    rows = within_time(
        using,
        SEARCH_READ_TIMEOUT_MS,
        run,
        random_page_cost=SEARCH_RANDOM_PAGE_COST,
        max_parallel_workers_per_gather=SEARCH_PARALLEL_WORKERS,
    )
    if rows is not None:
        return rows
    with planner_settings(using, enable_indexscan="off"):
        return run()
