"""The ledger of status changes, the requests behind them and the billable counters."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from contacts.models import Contact, StatusSourceType
from contacts.status.reasons import status_reason_text
from crm.models import BaseModel, LeasedJob


class LedgerStatus(models.TextChoices):
    MARKETING = "marketing", "Marketing"
    NON_MARKETING = "non_marketing", "Non-marketing"
    NONE = "none", "(deleted)"


class LedgerAction(models.TextChoices):
    UPGRADE = "upgrade", "Set marketing (immediate)"
    DOWNGRADE_SCHEDULED = "downgrade_scheduled", "Set non-marketing (from the next update date)"
    DOWNGRADE_CANCELLED = "downgrade_cancelled", "Pending non-marketing cancelled"
    ROLLOVER = "rollover", "Pending non-marketing applied at the update date"
    DELETED = "deleted", "Marketing contact deleted"


class StatusChangeRequest(models.Model):
    """One call of the status service; its idempotency key makes a retry change nothing."""

    idempotency_key = models.CharField(max_length=200, unique=True)
    operation = models.CharField(max_length=32)
    fingerprint = models.CharField(
        max_length=64, help_text="Hash of what was asked, to refuse a reused key."
    )
    source_type = models.CharField(max_length=20, choices=StatusSourceType.choices)
    source_id = models.CharField(max_length=64, blank=True)
    source_name = models.CharField(max_length=200, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField()
    result = models.JSONField(default=dict)

    def __str__(self) -> str:
        return f"{self.operation} {self.idempotency_key}"


class StatusChange(models.Model):
    """The append-only ledger of marketing-status changes.

    `delta` is this row's effect on the billable count at `effective_at`: +1 an
    upgrade (now) or a cancelled downgrade (at the pending date, undoing the -1
    scheduled there), -1 a scheduled downgrade (at the update date) or a deleted
    billable contact (now), 0 the rollover that applies an already-counted
    downgrade. So the billable count at any instant t is the sum of `delta` over
    rows with effective_at <= t, and each contact is counted exactly once.
    Rows outlive their contact (no database constraint on contact_id).
    """

    contact = models.ForeignKey(
        Contact,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # covered by statuschange_contact_idx
        related_name="status_changes",
    )
    request = models.ForeignKey(
        StatusChangeRequest,
        on_delete=models.PROTECT,
        db_index=False,  # covered by statuschange_once_per_request
        related_name="changes",
    )
    action = models.CharField(max_length=24, choices=LedgerAction.choices)
    from_status = models.CharField(max_length=16, choices=LedgerStatus.choices)
    to_status = models.CharField(max_length=16, choices=LedgerStatus.choices)
    requested_at = models.DateTimeField()
    effective_at = models.DateTimeField()
    delta = models.SmallIntegerField()
    source_type = models.CharField(max_length=20, choices=StatusSourceType.choices)
    source_id = models.CharField(max_length=64, blank=True)
    source_name = models.CharField(max_length=200, blank=True)
    # No index: ledger inserts stay lean; only deleting a user looks rows up by actor.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        db_index=False,
        related_name="+",
    )

    class Meta:
        ordering = ["-id"]
        verbose_name = "status ledger row"
        verbose_name_plural = "status ledger rows"
        constraints = [
            models.UniqueConstraint(
                fields=["request", "contact", "action"], name="statuschange_once_per_request"
            ),
            models.CheckConstraint(
                condition=models.Q(delta__in=[-1, 0, 1]), name="statuschange_delta_unit"
            ),
        ]
        indexes = [
            # A contact's history, newest first.
            models.Index(fields=["contact", "-id"], name="statuschange_contact_idx"),
            # The replay walks rows in effective order.
            models.Index(fields=["effective_at"], name="statuschange_effective_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id}: {self.from_status} → {self.to_status} ({self.action})"

    @property
    def reason_text(self) -> str:
        """Who or what made the change, as a phrase (contacts.status.reasons)."""
        return status_reason_text(self.source_type, self.source_id, self.source_name, self.actor)


class PeriodUsage(models.Model):
    """The billable count of one billing period [period_start, period_end), kept by the status service.

    Updated in the same transaction as every change with F()/GREATEST (O(1) a
    change). `scheduled_downgrades` are the pending downgrades that take effect at
    `period_end`: the next period opens with live_count - scheduled_downgrades.
    """

    period_start = models.DateTimeField(unique=True)
    period_end = models.DateTimeField()
    opening_count = models.PositiveIntegerField(default=0)
    live_count = models.PositiveIntegerField(default=0)
    peak_count = models.PositiveIntegerField(default=0)
    scheduled_downgrades = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-period_start"]
        verbose_name = "period counter"
        verbose_name_plural = "period counters"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(period_end__gt=models.F("period_start")),
                name="periodusage_end_after_start",
            ),
            models.CheckConstraint(
                condition=models.Q(peak_count__gte=models.F("live_count"))
                & models.Q(peak_count__gte=models.F("opening_count")),
                name="periodusage_peak_is_max",
            ),
            models.CheckConstraint(
                condition=models.Q(scheduled_downgrades__lte=models.F("live_count")),
                name="periodusage_scheduled_within_live",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.period_start:%Y-%m-%d}: peak {self.peak_count}"


class UsageState(models.Model):
    """One row, locked first by every status change: it serialises the counters and
    keeps the change clock monotonic, so the ledger's order is the counters' order."""

    last_change_at = models.DateTimeField(null=True, blank=True)
    # Every downgrade due at or before this instant has been applied: the next rollover
    # reads only (rolled_over_through, as_of] of contact_pending_idx, however many
    # applied downgrades the index keeps ("non-marketing since").
    rolled_over_through = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return "usage state"


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Waiting for approval"
    APPROVED = "approved", "Approved and run"
    REJECTED = "rejected", "Rejected"
    FAILED = "failed", "Approved, but the change failed"


class PendingApproval(models.Model):
    """A set-marketing change held by the guardrails (`contacts.status.guardrails`): nothing
    of it was written; it runs, with its original idempotency key and on the contacts it
    named, only when a user with `billing.approve_overage` approves it (billing decides)."""

    idempotency_key = models.CharField(max_length=200, unique=True)
    operation = models.CharField(max_length=32)
    contact_ids = models.JSONField(
        null=True, blank=True, help_text="The contacts it would make marketing, by id."
    )
    # The request as it was asked (its target and source), so that a retry of it after the
    # approval replays the approved change instead of conflicting with it.
    fingerprint = models.CharField(max_length=64, blank=True, default="")
    source_type = models.CharField(max_length=20)
    source_id = models.CharField(max_length=64, blank=True)
    source_name = models.CharField(max_length=200, blank=True)
    requested_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    requested_at = models.DateTimeField()
    new_marketing = models.PositiveIntegerField(help_text="Contacts it would make marketing.")
    live_after = models.PositiveIntegerField()
    cost = models.JSONField(default=dict)
    reason = models.CharField(max_length=300)
    status = models.CharField(
        max_length=10, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING
    )
    decided_by = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-requested_at"]
        # Billing's table until the guardrails moved under the usage lock in contacts.
        db_table = "billing_pendingapproval"

    def __str__(self) -> str:
        return f"#{self.pk}: {self.new_marketing:,} new marketing contacts ({self.get_status_display()})"


class BulkJobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    HELD = "held", "Waiting for approval"
    REJECTED = "rejected", "Stopped: the held part was rejected"
    FAILED = "failed", "Failed"


class BulkStatusJob(LeasedJob, BaseModel):
    """A status change over many contacts ("all N matching"), run in the background.

    The contacts it acts on are frozen when it is submitted: `criteria` records what was
    asked (the admin's list filters and search, or the API's filter), `as_of` the instant
    they were evaluated at, and `BulkStatusJobContact` rows the contacts they matched
    then. A worker (`contacts.status.bulk.bulk_status_job_run`) goes through them in
    chunks of contact ids, each one call of the status service under its own idempotency
    key, with the cursor and counts saved in the chunk's transaction: a job killed
    half-way is resumed from its cursor and nothing is done twice.
    """

    LEASE_RUNNING = BulkJobStatus.RUNNING
    LEASE_FAILED = BulkJobStatus.FAILED
    LEASE_MESSAGE_FIELD = "message"
    LEASE_NOUN = "bulk status change"

    operation = models.CharField(
        max_length=32,
        choices=[
            ("set_marketing", "Set as marketing"),
            ("set_non_marketing", "Set as non-marketing"),
        ],
    )
    status = models.CharField(
        max_length=10, choices=BulkJobStatus.choices, default=BulkJobStatus.QUEUED, db_index=True
    )
    origin = models.CharField(
        max_length=10, choices=[("admin", "Admin"), ("api", "API")], default="admin"
    )
    criteria = models.JSONField(
        default=dict, help_text="The filters and search it was asked with, as given."
    )
    as_of = models.DateTimeField(help_text="The instant the criteria were evaluated at.")
    idempotency_key = models.CharField(max_length=200, unique=True)
    fingerprint = models.CharField(
        max_length=64, help_text="Hash of what was asked, to refuse a reused key."
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    total = models.PositiveIntegerField(default=0, help_text="Contacts matched when submitted.")
    done = models.PositiveIntegerField(default=0, help_text="Contacts gone through so far.")
    changed = models.PositiveIntegerField(
        default=0,
        help_text="Became marketing now, or were scheduled non-marketing (by operation).",
    )
    cancelled = models.PositiveIntegerField(
        default=0, help_text="Pending downgrades cancelled (set as marketing)."
    )
    already = models.PositiveIntegerField(default=0, help_text="Already in the asked-for state.")
    held = models.PositiveIntegerField(default=0, help_text="Contacts waiting for approval.")
    effective_from = models.DateTimeField(null=True, blank=True)
    cursor = models.BigIntegerField(
        default=0, editable=False, help_text="Contacts up to this id are done."
    )
    chunk_upper = models.BigIntegerField(
        default=0, editable=False, help_text="The last id of the chunk being worked on."
    )
    approval = models.ForeignKey(
        PendingApproval,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The change the guardrails held, if any.",
    )
    approval_key = models.CharField(max_length=200, blank=True, editable=False)
    message = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "bulk status change"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=BulkJobStatus.values),
                name="bulkstatusjob_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_operation_display()} ({self.total:,} contacts)"

    @property
    def progress_percent(self) -> int:
        if self.status in (BulkJobStatus.DONE, BulkJobStatus.REJECTED):
            return 100
        if not self.total:
            return 0
        return min(100, self.done * 100 // self.total)

    @property
    def finished(self) -> bool:
        return self.status not in (BulkJobStatus.QUEUED, BulkJobStatus.RUNNING)

    @property
    def source_name(self) -> str:
        return f"Bulk change #{self.pk}"


class BulkStatusJobContact(models.Model):
    """The contacts a bulk status change matched when it was submitted: its frozen target."""

    job = models.ForeignKey(
        BulkStatusJob,
        on_delete=models.CASCADE,
        db_index=False,  # covered by bulkstatusjobcontact_once
        related_name="+",
    )
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "contact"], name="bulkstatusjobcontact_once"),
        ]

    def __str__(self) -> str:
        return f"bulk change {self.job_id}: contact {self.contact_id}"
