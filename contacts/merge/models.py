"""The record of a merge: which contact was merged away into which survivor."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class MergedContact(models.Model):
    """One merge: `merged_id` was merged into `survivor_id` and no longer exists.

    The ids are plain integers, not foreign keys: the merged-away contact is gone, and the
    survivor may be deleted or merged away later while this record stays (like the ledger,
    whose rows stay attached to the merged-away id; the history selector follows these
    records to show them on the survivor). A contact is merged away at most once.
    """

    survivor_id = models.BigIntegerField(db_index=True)
    merged_id = models.BigIntegerField(unique=True)
    merged_email = models.EmailField(max_length=254)
    # The effective statuses when the merge ran ("marketing", "pending", "non_marketing").
    survivor_status = models.CharField(max_length=16)
    merged_status = models.CharField(max_length=16)
    outcome_status = models.CharField(max_length=16)
    values = models.JSONField(default=dict, blank=True, help_text="The fields the merge set.")
    moved = models.JSONField(default=dict, blank=True, help_text="Rows moved to the survivor.")
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)  # noqa: DJ001
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        db_index=False,
        related_name="+",
    )
    merged_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(survivor_id=models.F("merged_id")),
                name="mergedcontact_not_itself",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.merged_email} (#{self.merged_id}) merged into #{self.survivor_id}"
