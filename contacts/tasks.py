"""Celery tasks of contacts: thin interfaces over the services."""

from celery import shared_task

from contacts.status.services import contacts_rollover


@shared_task(name="contacts.apply_due_downgrades", acks_late=True, max_retries=3)
def apply_due_downgrades() -> dict:
    """Bring stored statuses up to date after an update date (idempotent; safe to run often).

    Billable counts never wait for it: a due downgrade already counts as
    non-marketing everywhere. Billing's close runs the same rollover.
    """
    return contacts_rollover().as_dict()


@shared_task(name="contacts.run_contact_import", acks_late=True, max_retries=3)
def run_contact_import(contact_import_id: int) -> dict:
    """Run a committed CSV import (returns at once when it is not queued or running)."""
    from contacts.imports.services import contact_import_run

    contact_import = contact_import_run(contact_import_id=contact_import_id)
    return {"id": contact_import.pk, "status": contact_import.status}


@shared_task(
    name="contacts.upsert_import_chunk",
    acks_late=True,
    # A pool process lost in the middle hands the chunk back to the queue: the chunk is one
    # transaction, saved once (its row is marked in that transaction).
    reject_on_worker_lost=True,
    max_retries=3,
)
def upsert_import_chunk(contact_import_id: int, number: int, token: str) -> dict:
    """One chunk of an import whose upsert the workers share, under the import's lease."""
    from contacts.imports.shared import import_chunk_run

    outcome = import_chunk_run(contact_import_id=contact_import_id, number=number, token=token)
    return {"id": contact_import_id, "chunk": number, "outcome": outcome}


@shared_task(name="contacts.finish_import", acks_late=True, max_retries=3)
def finish_import(contact_import_id: int, token: str) -> dict:
    """The rest of a shared import once every chunk is saved (the first delivery does it)."""
    from contacts.imports.shared import import_finish

    return {
        "id": contact_import_id,
        "outcome": import_finish(contact_import_id=contact_import_id, token=token),
    }


@shared_task(name="contacts.drop_stale_import_previews", acks_late=True, max_retries=3)
def drop_stale_import_previews() -> dict:
    """Drop the staged rows of previews no import waits on any more (idempotent)."""
    from contacts.imports.kept import kept_sweep

    return {"dropped": len(kept_sweep())}


# Chunks of SEND_CHUNK_SIZE a worker sends before it re-enqueues the rest (~10,000 emails):
# a long send never holds one worker for hours, and a crash loses little.
SEND_CHUNKS_PER_TASK = 50


@shared_task(name="contacts.send_marketing_email", bind=True, acks_late=True, max_retries=3)
def send_marketing_email(self, email_id: int) -> dict:
    """Send (or resume sending) a marketing email to its audience. Idempotent.

    Returns early unless the email is "sending". Each run sends at most
    SEND_CHUNKS_PER_TASK chunks and re-enqueues itself while recipients remain;
    eagerly (the embedded default) it runs to the end in-process instead.
    """
    from contacts.outreach.models import (
        MarketingEmail,
        MarketingEmailStatus,
    )
    from contacts.outreach.selectors import marketing_email_audience
    from contacts.outreach.services import (
        marketing_email_deliver,
        marketing_email_finish,
    )

    email = MarketingEmail.objects.filter(pk=email_id).first()
    if email is None or email.status != MarketingEmailStatus.SENDING:
        return {"email_id": email_id, "skipped": True}
    eager = bool(self.request.is_eager)
    result = marketing_email_deliver(
        email=email,
        contacts=marketing_email_audience(email=email),
        max_chunks=None if eager else SEND_CHUNKS_PER_TASK,
    )
    if result.done:
        marketing_email_finish(email=email)
    else:
        send_marketing_email.delay(email_id)
    return {"email_id": email_id, **result.as_dict()}


@shared_task(name="contacts.run_bulk_status_job", acks_late=True, max_retries=3)
def run_bulk_status_job(job_id: int) -> dict:
    """Run (or go on with) a bulk status change; returns at once when it is not queued or
    running, or another worker holds it."""
    from contacts.status.bulk import bulk_status_job_run

    job = bulk_status_job_run(job_id=job_id)
    return {"id": job.pk, "status": job.status, "done": job.done, "total": job.total}
