"""The contact admin's confirmations of a status change: what one contact's change costs or
saves, and a bulk change over "all N matching" queued as a background job
(`contacts.status.bulk`) instead of run inside the request."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from contacts.models import Contact
from contacts.status.bulk import bulk_status_job_submit
from contacts.status.models import BulkStatusJob
from contacts.status.results import SET_MARKETING, SET_NON_MARKETING, IdempotencyConflict
from crm.admin import account_time_zone
from crm.jobs import JobNotQueued


def asks_confirmation(preview) -> bool:
    """A change on one contact's page is confirmed first when it costs or saves money: set
    marketing once the billable count is at or past the tier (billing's cost names the tier),
    set non-marketing whenever it schedules a downgrade (the page shows the saving)."""
    if preview.operation == SET_NON_MARKETING:
        return preview.would_schedule > 0
    cost = preview.extra.get("cost") or {}
    included = cost.get("included")
    return bool(preview.would_change) and included is not None and preview.live_after > included


class ContactStatusConfirmationMixin:
    def _status_confirmation(self, request, contact: Contact, preview):
        """What one contact's change adds to this period's invoice, or saves from the next
        period, with a button that confirms it."""
        set_marketing = preview.operation == SET_MARKETING
        context = {
            **self.admin_site.each_context(request),
            "title": f"Set “{contact}” as {'marketing' if set_marketing else 'non-marketing'}?",
            "subtitle": None,
            "opts": self.opts,
            "media": self.media,
            "contact": contact,
            "preview": preview,
            "set_marketing": set_marketing,
            "action_url": request.path,
            "contact_url": reverse(
                f"{self.admin_site.name}:contacts_contact_change", args=[quote(contact.pk)]
            ),
        }
        request.current_app = self.admin_site.name
        with timezone.override(account_time_zone()):
            return TemplateResponse(
                request, "admin/contacts/contact/status_confirmation.html", context
            ).render()

    def _start_bulk_job(
        self, request, queryset, operation: str, data: dict, *, select_across: bool
    ):
        """Queue the change as a background job over the contacts the selection matches now,
        and go to its page (progress, then the result)."""
        key = data["idempotency_key"]
        if select_across:
            criteria = {"list_filters": request.GET.dict()}
        else:
            criteria = {"selected": sorted(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME))}
        try:
            job, created = bulk_status_job_submit(
                contacts=queryset,
                operation=operation,
                criteria=criteria,
                origin="admin",
                actor=request.user,
                idempotency_key=key,
            )
        except IdempotencyConflict:
            self.message_user(
                request,
                "This confirmation was already submitted; nothing more was changed.",
                messages.WARNING,
            )
            return None
        except JobNotQueued as failure:  # stored, failed with the reason: resumable
            self.message_user(request, str(failure), messages.ERROR)
            job, created = BulkStatusJob.objects.filter(idempotency_key=key).first(), False
            if job is None:
                return None
        else:
            if created:
                self.message_user(
                    request,
                    f"The change of {job.total:,} contacts runs in the background; this page "
                    "shows its progress.",
                    messages.SUCCESS,
                )
            else:
                self.message_user(
                    request,
                    "This confirmation was already submitted; nothing more was changed.",
                    messages.WARNING,
                )
        return HttpResponseRedirect(
            reverse(f"{self.admin_site.name}:contacts_bulkstatusjob_change", args=[job.pk])
        )
