"""Celery tasks of contacts: thin interfaces over the services."""

from celery import shared_task

from contacts.services import contacts_rollover


@shared_task(name="contacts.apply_due_downgrades", acks_late=True, max_retries=3)
def apply_due_downgrades() -> dict:
    """Bring stored statuses up to date after an update date (idempotent; safe to run often).

    Billable counts never wait for it: a due downgrade already counts as
    non-marketing everywhere. Billing's close runs the same rollover.
    """
    return contacts_rollover().as_dict()
