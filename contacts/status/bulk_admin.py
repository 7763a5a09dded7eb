"""The admin of bulk status changes run in the background: a read-only list, and a page
with the job's progress (polled while it runs, like an import's) and its result."""

from __future__ import annotations

import contextlib

from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.urls import NoReverseMatch, path, reverse

from contacts.status.bulk import (
    BulkJobStateError,
    bulk_status_job_resume,
    bulk_status_job_sample,
    bulk_status_job_sync,
)
from contacts.status.models import BulkJobStatus, BulkStatusJob
from contacts.status.rules import can_change_marketing_status
from crm.admin import ReadOnlyAdminMixin
from crm.jobs import JobNotQueued, jobs_expire_stale

# Contacts of the job shown on its page; the ledger link has them all.
JOB_PAGE_SAMPLE = 10


def job_progress(job: BulkStatusJob) -> dict:
    """What the job page polls while the job runs."""
    return {
        "status": job.status,
        "status_display": job.get_status_display(),
        "total": job.total,
        "done": job.done,
        "changed": job.changed,
        "cancelled": job.cancelled,
        "already": job.already,
        "held": job.held,
        "percent": job.progress_percent,
        "finished": job.finished,
    }


@admin.register(BulkStatusJob)
class BulkStatusJobAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    change_form_template = "admin/contacts/bulkstatusjob/change_form.html"
    list_display = [
        "id",
        "operation",
        "status",
        "progress_display",
        "total",
        "changed",
        "already",
        "held",
        "origin",
        "requested_by",
        "created_at",
    ]
    list_filter = ["status", "operation", "origin"]
    list_select_related = ["requested_by"]
    fieldsets = [
        (None, {"fields": ["operation", "status", "message", "criteria", "as_of"]}),
        ("Counts", {"fields": ["total", "done", "changed", "cancelled", "already", "held"]}),
        (
            "Record",
            {
                "fields": [
                    "origin",
                    "requested_by",
                    "idempotency_key",
                    "approval",
                    "effective_from",
                    "created_at",
                    "started_at",
                    "finished_at",
                ]
            },
        ),
    ]

    def get_readonly_fields(self, request, obj=None):
        return [name for _, options in self.fieldsets for name in options["fields"]]

    @admin.display(description="Progress")
    def progress_display(self, obj: BulkStatusJob) -> str:
        if obj.finished:
            return obj.get_status_display()
        return f"{obj.progress_percent}% ({obj.done:,} of {obj.total:,})"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<int:pk>/progress/",
                view(self.progress_view),
                name="contacts_bulkstatusjob_progress",
            ),
            path("<int:pk>/resume/", view(self.resume_view), name="contacts_bulkstatusjob_resume"),
            *super().get_urls(),
        ]

    def _url(self, name: str, pk: int) -> str:
        return reverse(f"{self.admin_site.name}:contacts_bulkstatusjob_{name}", args=[pk])

    def _job(self, request, pk) -> BulkStatusJob:
        if not self.has_view_permission(request):
            raise PermissionDenied
        job = self.get_queryset(request).filter(pk=pk).first()
        if job is None:
            raise Http404("No such bulk status change.")
        return bulk_status_job_sync(job=job)

    def progress_view(self, request, pk: int):
        return JsonResponse(job_progress(self._job(request, pk)))

    def resume_view(self, request, pk: int):
        """POST: queue a failed job again; it goes on from where it stopped."""
        job = self._job(request, pk)
        if not can_change_marketing_status(request.user):
            raise PermissionDenied
        if request.method == "POST":
            try:
                bulk_status_job_resume(job=job)
            except (BulkJobStateError, JobNotQueued) as failure:
                self.message_user(request, str(failure), messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"The bulk status change #{job.pk} is queued again: it goes on where it "
                    "stopped.",
                    messages.SUCCESS,
                )
        return HttpResponseRedirect(self._url("change", job.pk))

    def changelist_view(self, request, extra_context=None):
        jobs_expire_stale(model=BulkStatusJob)  # running jobs whose worker died
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = dict(extra_context or {})
        job = self.get_queryset(request).filter(pk=object_id).first()
        if job is not None and self.has_view_permission(request, job):
            job = bulk_status_job_sync(job=job)
            site = self.admin_site.name
            extra_context.update(
                job=job,
                progress_url=self._url("progress", job.pk),
                set_marketing=job.operation == "set_marketing",
                sample=bulk_status_job_sample(job=job, limit=JOB_PAGE_SAMPLE),
                missing=job.total - job.done if job.status == BulkJobStatus.DONE else 0,
                resume_url=self._url("resume", job.pk)
                if job.status == BulkJobStatus.FAILED and can_change_marketing_status(request.user)
                else "",
                contact_url=f"{site}:contacts_contact_change",
            )
            if request.user.has_perm("contacts.view_statuschange"):
                extra_context["ledger_url"] = (
                    reverse(f"{site}:contacts_statuschange_changelist")
                    + f"?source_type=bulk_action&source_id={job.pk}"
                )
            if job.approval_id and request.user.has_perm("contacts.view_pendingapproval"):
                with contextlib.suppress(NoReverseMatch):  # a site without the approvals admin
                    extra_context["approval_url"] = reverse(
                        f"{site}:contacts_pendingapproval_change", args=[quote(job.approval_id)]
                    )
        return super().change_view(request, object_id, form_url, extra_context)
