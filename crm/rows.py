"""The one get-or-create: a row made once by its unique key, however many callers race.

A get-or-create is a check-then-act. Two callers both find no row and both insert; the
unique index lets one in and refuses the other with an `IntegrityError`, a 500 if
nobody catches it. Every get-or-create on a unique key in the code base goes through
`row_get_or_create` instead of copying the recovery:

1. read the row by its key; if it is there, that is the answer;
2. otherwise run the insert (or the caller's `create`) in a savepoint;
3. when the unique index refuses it because a concurrent caller won, roll back to the
   savepoint — the caller's own transaction stays usable — and read the winner's row.

On PostgreSQL the losing insert waits until the winner's transaction ends; the read
that follows (READ COMMITTED: a new snapshot per statement) sees the winner's row, and
if the winner rolled back instead, the loser's insert simply succeeds. An
`IntegrityError` for any other reason (no row with the key exists after it) is raised.

`create` may write more than the row: a form submission stores its contact, the
submission and its event together. A twin that claimed the key first then undoes all of
this caller's writes, which is how a retried request stores nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.db import IntegrityError, transaction
from django.db.models import Model

M = TypeVar("M", bound=Model)


def row_get_or_create(
    model: type[M],
    *,
    lookup: dict[str, Any],
    defaults: dict[str, Any] | None = None,
    create: Callable[[], M] | None = None,
) -> tuple[M, bool]:
    """(the row whose unique key is `lookup`, whether this call created it).

    Without `create` the row is inserted from `lookup` and `defaults`; with it, `create()`
    writes the row (and whatever must be written with it) and returns it.
    """
    manager = model._default_manager
    row = manager.filter(**lookup).first()
    if row is not None:
        return row, False
    try:
        with transaction.atomic():
            if create is None:
                return manager.create(**lookup, **(defaults or {})), True
            return create(), True
    except IntegrityError:
        row = manager.filter(**lookup).first()
        if row is None:
            raise
        return row, False
