"""Merging two contacts in the admin: the contacts list's action "Merge two contacts".

Selecting exactly two contacts opens a side-by-side page: which one stays, each field's
two values with a radio button for the one to keep, what becomes of the marketing status
and what it costs (the money from billing's preview extension, as the bulk status
confirmation shows it). Confirming calls `contacts_merge` as the person asking; the
message links to the survivor. The action needs contacts.change_contact and
contacts.delete_contact; a merge that makes the survivor marketing also needs
contacts.change_marketing_status, which the service checks.
"""

from __future__ import annotations

import uuid

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from contacts.merge.selectors import MERGE_FIELDS, STATUS_LABELS, merge_preview
from contacts.merge.services import MergeError, contacts_merge
from contacts.status.results import LockedSourceError, MarketingNotPermitted


class MergeForm(forms.Form):
    """Which contact stays, and for each field whose values differ, whose value to keep."""

    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=100)

    def __init__(self, *args, first, second, **kwargs):
        super().__init__(*args, **kwargs)
        self.contacts = {first.pk: first, second.pk: second}
        choices = [(str(first.pk), str(first)), (str(second.pk), str(second))]
        self.fields["survivor"] = forms.ChoiceField(
            choices=choices, widget=forms.RadioSelect, initial=str(first.pk), label="Keep"
        )
        self.order_fields(["survivor"])
        for name in MERGE_FIELDS:
            if getattr(first, name) == getattr(second, name):
                continue
            keep_first = getattr(first, name) not in ("", None)
            self.fields[f"value_{name}"] = forms.ChoiceField(
                choices=choices,
                widget=forms.RadioSelect,
                initial=str(first.pk if keep_first else second.pk),
                label=name,
                required=False,  # not chosen: the survivor's value, or the other's if empty
            )

    def survivor_and_merged(self):
        survivor = self.contacts[int(self.cleaned_data["survivor"])]
        merged = next(c for pk, c in self.contacts.items() if pk != survivor.pk)
        return survivor, merged

    def values(self) -> dict:
        chosen = {}
        for name in MERGE_FIELDS:
            picked = self.cleaned_data.get(f"value_{name}")
            if not picked:
                continue
            contact = self.contacts[int(picked)]
            chosen[name] = contact.source_id if name == "source" else getattr(contact, name)
        return chosen


class ContactMergeMixin:
    """For the contacts' ModelAdmin: the merge action and its page."""

    def has_merge_permission(self, request) -> bool:
        # Both: Django offers an action to a user with ANY of its listed permissions.
        return self.has_delete_permission(request) and self.has_change_permission(request)

    @admin.action(description="Merge two contacts", permissions=["merge"])
    def merge_contacts_action(self, request, queryset):
        pair = list(queryset.select_related("source").order_by("pk")[:3])
        if len(pair) != 2:
            self.message_user(
                request,
                "Select exactly two contacts to merge.",
                messages.ERROR,
            )
            return None
        first, second = pair
        confirming = request.POST.get("post") == "yes"
        form = MergeForm(
            request.POST if confirming else None,
            first=first,
            second=second,
            initial={"idempotency_key": f"admin-merge:{uuid.uuid4()}"},
        )
        error = ""
        if confirming and form.is_valid():
            survivor, merged = form.survivor_and_merged()
            try:
                result = contacts_merge(
                    survivor=survivor,
                    merged_away=merged,
                    values=form.values(),
                    by=request.user,
                    idempotency_key=form.cleaned_data["idempotency_key"],
                )
            except (MergeError, LockedSourceError, MarketingNotPermitted) as refused:
                error = str(refused)
            else:
                url = reverse(
                    f"{self.admin_site.name}:contacts_contact_change",
                    args=[quote(result.survivor.pk)],
                )
                text = (
                    "This merge was already made: {} is the contact that stayed."
                    if result.replayed
                    else "The contact {} was merged into {}; its history, memberships and engagement "
                    "are on it now."
                )
                links = [format_html('<a href="{}">{}</a>', url, result.survivor)]
                if not result.replayed:
                    links.insert(0, result.merge.merged_email)
                self.message_user(request, format_html(text, *links), messages.SUCCESS)
                return None
        return self._merge_page(request, form, first, second, error)

    def _merge_page(self, request, form, first, second, error: str):
        previews = {
            first.pk: merge_preview(survivor=first, merged=second),
            second.pk: merge_preview(survivor=second, merged=first),
        }
        preview = previews[first.pk]
        rows = []
        for item in preview.fields:
            field = form.fields.get(f"value_{item.name}")
            rows.append(
                {
                    "label": item.label,
                    "first": item.survivor_value,
                    "second": item.merged_value,
                    "radios": list(form[f"value_{item.name}"]) if field else None,
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Merge two contacts?",
            "subtitle": None,
            "opts": self.opts,
            "media": self.media,
            "form": form,
            "first": first,
            "second": second,
            "survivor_radios": list(form["survivor"]),
            "rows": rows,
            "preview": preview,
            "first_status": STATUS_LABELS[preview.survivor_status],
            "second_status": STATUS_LABELS[preview.merged_status],
            "refusals": [(form.contacts[pk], p.refusal) for pk, p in previews.items() if p.refusal],
            "error": error,
            "action_name": "merge_contacts_action",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "selected": [str(first.pk), str(second.pk)],
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/contacts/contact/merge_confirmation.html", context)
