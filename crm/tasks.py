"""Celery tasks of the project itself: thin interfaces over crm's services."""

from celery import shared_task

from crm.jobs import jobs_expire_stale


@shared_task(name="crm.expire_stale_jobs", acks_late=True, max_retries=3)
def expire_stale_jobs() -> dict:
    """Each minute (beat): fail the jobs whose worker stopped renewing its lease."""
    return {"failed": jobs_expire_stale()}
