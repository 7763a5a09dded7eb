"""Deleting contacts in the admin, one at a time or the selected ones, through the status
service.

Both go through `contacts_delete`, which writes the ledger row of a marketing contact and
lowers the live count at once (the period's peak stays). The rows that hang off a contact
(`contact_dependent_relations`: enrollments, engagement events, form submissions, ads leads,
list, audience and rotation memberships) go with it. They are the contact's own records,
written by the system and read-only in their admins, so deleting a contact needs
contacts.delete_contact alone — not the delete permission of each related model that
Django's delete page asks for (which nobody has for read-only rows, superusers included).

Django's own "delete selected" stays off (STYLE.md): its confirmation page collects every
related row in Python. "Delete selected contacts" counts in SQL instead, and confirms like
the bulk status actions (typing the number past MARKETING_CONFIRM_THRESHOLD).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from contacts.models import Contact, StatusSourceType
from contacts.selectors import contact_dependent_counts, contact_dependent_relations
from contacts.status.results import IdempotencyConflict, StatusSource
from contacts.status.services import contacts_delete


def _deletion_source(name: str) -> StatusSource:
    return StatusSource(StatusSourceType.DELETION, name=name)


class ContactDeletionMixin:
    """For the contacts' ModelAdmin: the delete page, `delete_model` and the bulk action.

    `bulk_confirm_form` is the bulk actions' confirmation form (an idempotency key, and the
    typed count past the threshold), set by the ModelAdmin."""

    bulk_confirm_form = None

    def get_deleted_objects(self, objs, request):
        """The delete page's list: the contact, and how many of its own rows go with it.

        No related permission is asked for (see the module docstring); nothing protects a
        contact from deletion (its related rows cascade or outlive it)."""
        ids = [obj.pk for obj in objs]
        opts = self.opts
        deleted = [
            format_html(
                '{}: <a href="{}">{}</a>',
                opts.verbose_name.capitalize(),
                reverse(
                    f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change",
                    args=[quote(obj.pk)],
                ),
                obj,
            )
            for obj in objs
        ]
        counts = {str(opts.verbose_name_plural): len(ids)}
        counts.update(contact_dependent_counts(contacts=Contact.objects.filter(pk__in=ids)))
        return deleted, counts, set(), []

    def delete_model(self, request, obj):
        contacts_delete(contacts=obj, actor=request.user, source=_deletion_source("Admin"))

    def delete_queryset(self, request, queryset):
        contacts_delete(contacts=queryset, actor=request.user, source=_deletion_source("Admin"))

    def render_delete_form(self, request, context):
        obj = context.get("object")
        if obj is not None:
            context["marketing_now"] = obj.is_billable(timezone.now())
        return super().render_delete_form(request, context)

    @admin.action(description="Delete selected contacts", permissions=["delete"])
    def delete_contacts_action(self, request, queryset):
        now = timezone.now()
        total = queryset.order_by().count()
        marketing = queryset.order_by().billable(now).count()
        threshold = getattr(settings, "MARKETING_CONFIRM_THRESHOLD", 1_000)
        confirming = request.POST.get("post") == "yes"
        form = self.bulk_confirm_form(
            request.POST if confirming else None,
            expected=total,
            require_count=total > threshold,
            initial={"idempotency_key": f"admin-delete:{uuid.uuid4()}"},
        )
        if confirming and form.is_valid():
            self._delete_selected(request, queryset, form.cleaned_data["idempotency_key"])
            return None  # back to the changelist, filters kept
        context = {
            **self.admin_site.each_context(request),
            "title": "Delete the selected contacts?",
            "subtitle": None,
            "opts": self.opts,
            "media": self.media,
            "total": total,
            "marketing": marketing,
            "dependents": sorted(
                str(relation.related_model._meta.verbose_name_plural)
                for relation in contact_dependent_relations()
            ),
            "require_count": total > threshold,
            "threshold": threshold,
            "form": form,
            "action_name": "delete_contacts_action",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across") or "0",
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/contacts/contact/delete_selected.html", context)

    def _delete_selected(self, request, queryset, idempotency_key: str) -> None:
        try:
            result = contacts_delete(
                contacts=queryset,
                actor=request.user,
                source=_deletion_source("Admin bulk action"),
                idempotency_key=idempotency_key,
            )
        except IdempotencyConflict:
            result = None
        if result is None or result.replayed:
            self.message_user(
                request,
                "This confirmation was already submitted; nothing more was deleted.",
                messages.WARNING,
            )
            return
        self.message_user(
            request,
            f"{result.matched:,} contacts deleted. Live count {result.live_count:,}, this "
            f"period's peak {result.peak_count:,} (a peak already reached stays).",
            messages.SUCCESS,
        )
