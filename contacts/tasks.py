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


# --- imports ---


@shared_task(name="contacts.run_contact_import", acks_late=True, max_retries=3)
def run_contact_import(contact_import_id: int) -> dict:
    """Run a committed CSV import (returns at once when it is not queued or running)."""
    from contacts.services import contact_import_run

    contact_import = contact_import_run(contact_import_id=contact_import_id)
    return {"id": contact_import.pk, "status": contact_import.status}
