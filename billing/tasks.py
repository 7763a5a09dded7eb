"""Celery tasks of billing: thin interfaces over the services."""

import datetime as dt

from celery import shared_task

from billing.services import billing_close_periods


@shared_task(name="billing.close_periods", acks_late=True, max_retries=3)
def close_periods(as_of: str | None = None) -> list[dict]:
    """The daily catch-up: close every period that has ended (idempotent)."""
    as_of_dt = dt.datetime.fromisoformat(as_of) if as_of else None
    return [outcome.as_dict() for outcome in billing_close_periods(as_of=as_of_dt)]
