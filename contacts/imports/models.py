"""CSV imports, their row errors and the contacts each one touched."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from contacts.models import Contact, Source
from crm.models import BaseModel, LeasedJob


class ImportStatus(models.TextChoices):
    DRAFT = "draft", "Draft (mapping the columns)"
    PREVIEWED = "previewed", "Previewed (waiting for confirmation)"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    HELD = "held", "Done; marketing part waits for approval"


class ImportFormat(models.TextChoices):
    CSV = "csv", "CSV file"
    HUBSPOT = "hubspot", "HubSpot export"


# The job's `phase`, as the progress box says it.
IMPORT_PHASES = {
    "queued": "waiting for a worker",
    "reading": "reading the file",
    "saving": "saving the contacts",
    "finishing": "finishing (the contacts are saved)",
    "marketing": "making contacts marketing",
}


class ContactImport(LeasedJob, BaseModel):
    """One CSV file imported into the contacts (DESIGN §1.3, "import").

    Upload → column mapping → preview → commit (a background job). Contacts are
    upserted by normalised email; the import never downgrades a marketing status,
    and makes contacts marketing only when `marketing` is set (through the status
    service, ledger source type "import", id = this import's id). The job runs under a
    lease (crm.jobs): a worker that dies leaves it failed, and a resume continues after
    `upsert_after`.
    """

    LEASE_RUNNING = ImportStatus.RUNNING
    LEASE_FAILED = ImportStatus.FAILED
    LEASE_MESSAGE_FIELD = "message"
    LEASE_NOUN = "import"

    file = models.FileField(upload_to="imports/%Y/%m/", max_length=300)
    file_name = models.CharField(max_length=255, help_text="The name the file was uploaded with.")
    file_size = models.PositiveBigIntegerField(default=0)
    file_hash = models.CharField(max_length=64, db_index=True, help_text="SHA-256 of the file.")
    delimiter = models.CharField(max_length=1, default=",")
    format = models.CharField(
        max_length=16,
        choices=ImportFormat.choices,
        default=ImportFormat.CSV,
        help_text="A HubSpot export's columns are mapped by HubSpot's labels, and it may keep "
        "each contact's marketing status (a migration).",
    )
    columns = models.JSONField(default=list, help_text="The file's header, as read.")
    mapping = models.JSONField(
        default=dict, help_text="Column name → contact field ('' ignores the column)."
    )
    marketing = models.BooleanField(
        default=False, help_text="Set every contact in this import as a marketing contact."
    )
    source = models.ForeignKey(Source, on_delete=models.PROTECT, related_name="imports")
    status = models.CharField(
        max_length=16, choices=ImportStatus.choices, default=ImportStatus.DRAFT, db_index=True
    )
    phase = models.CharField(max_length=40, blank=True)
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    rows = models.PositiveIntegerField(default=0, help_text="Data rows in the file.")
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    unchanged_count = models.PositiveIntegerField(default=0)
    invalid_count = models.PositiveIntegerField(default=0)
    duplicate_count = models.PositiveIntegerField(default=0)
    marketing_count = models.PositiveIntegerField(
        default=0,
        help_text="Contacts that became marketing (or had a pending downgrade cancelled).",
    )
    upsert_after = models.CharField(
        max_length=254,
        blank=True,
        editable=False,
        help_text="The file's emails up to this one (in order) are saved; a resumed run goes on "
        "after it, with the counts saved so far.",
    )
    preview = models.JSONField(default=dict, blank=True)
    staged_table = models.CharField(
        max_length=63,
        blank=True,
        editable=False,
        help_text="PostgreSQL: the table holding the preview's staged rows, which the run "
        "reads instead of the file (contacts/imports/kept.py).",
    )
    marketing_result = models.JSONField(null=True, blank=True)
    message = models.TextField(blank=True, help_text="Why it failed, or what waits for approval.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    committed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    previewed_at = models.DateTimeField(null=True, blank=True)
    committed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "contact import"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=ImportStatus.values),
                name="contactimport_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.file_name}"

    @property
    def phase_display(self) -> str:
        """What the running job is doing, in words ("" when it is not running)."""
        return IMPORT_PHASES.get(self.phase, self.phase)

    @property
    def progress_percent(self) -> int:
        if self.status in (ImportStatus.DONE, ImportStatus.HELD):
            return 100
        if not self.total_rows:
            return 0
        return min(100, self.processed_rows * 100 // self.total_rows)

    # Every row read is accounted for: rows == imported_count + reported_count once it ran.
    @property
    def imported_count(self) -> int:
        """Rows that created, updated or matched (unchanged) a contact."""
        return self.created_count + self.updated_count + self.unchanged_count

    @property
    def reported_count(self) -> int:
        """Rows with a row error: invalid, or a duplicate email a later row replaced."""
        return self.invalid_count + self.duplicate_count

    @property
    def marketing_idempotency_key(self) -> str:
        return f"import:{self.pk}:marketing"


class ImportChunk(models.Model):
    """One range of an import's staged emails, after `lo` and through `hi`, when the upsert
    is shared by the workers (contacts/imports/shared.py): upserted once, by whichever
    worker took it; `done_at` is written in the range's own transaction."""

    contact_import = models.ForeignKey(
        ContactImport, on_delete=models.CASCADE, related_name="chunks"
    )
    number = models.PositiveIntegerField()
    lo = models.TextField(
        blank=True, help_text="The range starts after this email (empty: the first)."
    )
    hi = models.TextField(blank=True, help_text="The range ends with this email (empty: the last).")
    rows = models.PositiveIntegerField(help_text="Staged rows in the range.")
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["contact_import", "number"]
        constraints = [
            models.UniqueConstraint(fields=["contact_import", "number"], name="importchunk_once")
        ]

    def __str__(self) -> str:
        return f"Import #{self.contact_import_id}, range {self.number}"


class ImportRowError(models.Model):
    """A row the import could not take (or took once: a duplicate), with its line and column."""

    contact_import = models.ForeignKey(
        ContactImport,
        on_delete=models.CASCADE,
        db_index=False,  # covered by importrowerror_line_idx
        related_name="row_errors",
    )
    line = models.PositiveIntegerField(help_text="Line number in the file (the header is line 1).")
    column = models.CharField(max_length=200, blank=True)
    message = models.CharField(max_length=500)

    class Meta:
        ordering = ["line", "id"]
        indexes = [models.Index(fields=["contact_import", "line"], name="importrowerror_line_idx")]

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class ImportedContact(models.Model):
    """The contacts of a marketing import: the durable set its status change targets.

    Written only for imports marked marketing. The status service is given
    `Contact.objects.filter(pk__in=<these rows>)`, a query that stays valid when
    billing's guardrails hold the change and an approver runs it later.
    """

    contact_import = models.ForeignKey(
        ContactImport,
        on_delete=models.CASCADE,
        db_index=False,  # covered by importedcontact_once
        related_name="+",
    )
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    pending = models.BooleanField(
        default=False,
        help_text="A HubSpot export said “set to non-marketing at the next update”: once "
        "marketing, the contact's downgrade is scheduled for the next update date.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["contact_import", "contact"], name="importedcontact_once"
            ),
        ]

    def __str__(self) -> str:
        return f"import {self.contact_import_id}: contact {self.contact_id}"


class HubSpotRecord(models.Model):
    """A contact's HubSpot record, as the last HubSpot export that named it said.

    Written by HubSpot imports after their upsert. The record ID is unique: a later export
    whose row gives a known record ID with another email is a row error (the contact is
    not changed), so importing an export again finds the same contacts. HubSpot's create
    date is kept here; the contact's own `created_at` stays the instant it was created in
    Marketable, where its ledger history starts.
    """

    contact = models.OneToOneField(
        Contact, on_delete=models.CASCADE, primary_key=True, related_name="hubspot_record"
    )
    record_id = models.CharField(max_length=20, unique=True, help_text="HubSpot's “Record ID”.")
    hubspot_created_at = models.DateTimeField(
        null=True, blank=True, help_text="HubSpot's “Create Date” of the record."
    )
    contact_import = models.ForeignKey(
        ContactImport,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The import that linked the contact to this record.",
    )

    class Meta:
        verbose_name = "HubSpot record"

    def __str__(self) -> str:
        return f"HubSpot record {self.record_id}: contact {self.contact_id}"
