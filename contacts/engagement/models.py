"""Engagement events (email opens, clicks, form submissions, …), one row per external id."""

from __future__ import annotations

from django.db import models

from contacts.models import Contact


class EngagementType(models.TextChoices):
    EMAIL_OPEN = "email_open", "Email open"
    EMAIL_CLICK = "email_click", "Email click"
    FORM_SUBMISSION = "form_submission", "Form submission"
    PAGE_VIEW = "page_view", "Page view"
    AD_CLICK = "ad_click", "Ad click"
    CHAT = "chat", "Chat"
    MEETING_BOOKED = "meeting_booked", "Meeting booked"


class EngagementEvent(models.Model):
    """Something a contact did. Workflows, lead scores and hygiene read these.

    Append-only; `external_id` (when the sender has one) makes ingestion idempotent.
    """

    contact = models.ForeignKey(
        Contact,
        on_delete=models.CASCADE,
        db_index=False,  # covered by engagement_contact_idx
        related_name="engagement_events",
    )
    type = models.CharField(max_length=24, choices=EngagementType.choices)
    occurred_at = models.DateTimeField()
    # Unique by the constraint below, not unique=True, which on PostgreSQL adds a second,
    # LIKE-pattern index: one more write for every event ingested. NULL, not "", for "no
    # id": the unique constraint then admits any number of events without one.
    external_id = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    properties = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [
            # A contact's recent events of a type (criteria "N events of type T in D days"), and
            # the score recompute, which walks contacts by id. Nothing reads events across
            # contacts by type or time (the admin lists them by id, "engaged within N days"
            # reads Contact.last_engaged_at), so no second index: each one costs every event
            # ingested a write (a fifth of the ingestion's time at 1M contacts).
            models.Index(fields=["contact", "type", "-occurred_at"], name="engagement_contact_idx"),
        ]
        constraints = [
            # Ingestion is idempotent by the sender's id (INSERT … ON CONFLICT (external_id)).
            models.UniqueConstraint(fields=["external_id"], name="engagement_external_id_once"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id}: {self.type} at {self.occurred_at:%Y-%m-%d %H:%M}"
