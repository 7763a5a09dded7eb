"""The contacts and sources admin; the admins of each concern are registered by their packages."""

from __future__ import annotations

import datetime as dt
import operator
import uuid
from functools import reduce

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import (
    HttpResponseBadRequest,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html

from contacts.admin_delete import ContactDeletionMixin
from contacts.admin_filters import (
    ContactTypeFilter,
    FilterAliasesMixin,
    LeadStatusFilter,
    LifecycleStageFilter,
    MarketingStatusFilter,
    PendingFilter,
    SourceKindFilter,
)
from contacts.admin_status import ContactStatusConfirmationMixin, asks_confirmation
from contacts.filters import search_branches
from contacts.imports.views import export_response
from contacts.intake.admin import source_channel
from contacts.merge.admin import ContactMergeMixin
from contacts.models import (
    LOCKED_KINDS,
    Contact,
    MarketingStatus,
    Source,
    SourceKind,
    StatusSourceType,
    normalise_email,
)
from contacts.outreach.admin import AdAudienceChoiceForm, membership_message
from contacts.outreach.models import (
    AdAudience,
    ContactList,
)
from contacts.outreach.services import (
    ad_audience_add,
    ad_audience_remove,
)
from contacts.selectors import (
    contact_list,
    source_for_manual_entry,
    source_list,
)
from contacts.services import (
    CONTACT_EDITABLE_FIELDS,
    contact_create,
    contact_update,
    contacts_creation_policy,
)
from contacts.status.bulk import bulk_status_job_threshold
from contacts.status.reasons import status_reason_text
from contacts.status.results import (
    SET_MARKETING,
    SET_NON_MARKETING,
    ChangeHeld,
    IdempotencyConflict,
    LockedSourceError,
    StatusSource,
)
from contacts.status.rules import can_change_marketing_status
from contacts.status.selectors import contact_status_history
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
    contacts_status_preview,
)
from crm.admin import (
    BigTableAdmin,
    account_time_zone,
    capped_count,
)
from crm.text import counted

# Ledger rows shown on a contact's page; the ledger admin has the rest.
CONTACT_PAGE_LEDGER_ROWS = 50
# Contacts a bulk confirmation names (the first by id) besides the counts.
CONFIRMATION_SAMPLE = 10


def format_day(value) -> str:
    """An instant as a day in the active time zone (the account's, in these views)."""
    return date_format(timezone.localtime(value))


def held_message(held: ChangeHeld) -> str:
    """A change the guardrails held: nothing changed; the guard's message says what waits."""
    return f"Nothing was changed yet. {held}"


def manual_status_source(user) -> StatusSource:
    return StatusSource(StatusSourceType.MANUAL, id=str(user.pk), name=user.get_username())


class UnengagedFilter(admin.SimpleListFilter):
    """No engagement in N days (never engaged included) and created more than N days ago:
    the savings report's and hygiene's "unengaged". Any whole N from 1 to 3650 is accepted."""

    title = "unengaged for"
    parameter_name = "unengaged"
    DAYS = (30, 60, 90, 180, 365)

    def lookups(self, request, model_admin):
        return [(str(days), f"{days} days or more") for days in self.DAYS]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit() or not 1 <= int(value) <= 3_650:
            raise IncorrectLookupParameters("unengaged: a number of days from 1 to 3650")
        cutoff = timezone.now() - dt.timedelta(days=int(value))
        return queryset.filter(
            Q(last_engaged_at__lt=cutoff) | Q(last_engaged_at__isnull=True), created_at__lt=cutoff
        )


def membership_filter(model, *, title: str, parameter: str, lookup: str):
    """A changelist filter: the members of one list or audience (its unique
    (owner, contact) constraint serves the lookup)."""

    class MembershipFilter(admin.SimpleListFilter):
        def lookups(self, request, model_admin):
            return [(str(pk), name) for pk, name in model.objects.values_list("pk", "name")]

        def queryset(self, request, queryset):
            if self.value() and self.value().isdigit():
                return queryset.filter(**{lookup: int(self.value())})
            return queryset

    MembershipFilter.title = title
    MembershipFilter.parameter_name = parameter
    MembershipFilter.__name__ = f"{model.__name__}Filter"
    return MembershipFilter


ContactListFilter = membership_filter(
    ContactList,
    title="contact list",
    parameter="contact_list",
    lookup="list_memberships__contact_list_id",
)
AdAudienceFilter = membership_filter(
    AdAudience, title="ad audience", parameter="ad_audience", lookup="ad_audiences__id"
)


class ContactForm(forms.ModelForm):
    class Meta:
        model = Contact
        fields = [*sorted(CONTACT_EDITABLE_FIELDS), "source"]

    def clean_email(self):
        # Normalised before the unique check, which would otherwise miss "Ann@X.com" vs "ann@x.com".
        return normalise_email(self.cleaned_data["email"])


class ContactAddForm(ContactForm):
    marketing = forms.BooleanField(
        required=False,
        label="Marketing contact",
        help_text=(
            "Create it as a marketing contact: it counts toward this period's bill at once. "
            "Leave unticked to use the source's default."
        ),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        source = self.fields.get("source")
        if source is not None:
            source.required = False
            source.help_text = (
                "Where the contact comes from; its default decides the status. "
                "Leave empty for “Created by hand” (non-marketing)."
            )

    def clean(self):
        cleaned = super().clean()
        source = cleaned.get("source")
        if source is not None:
            try:
                # The one creation rule (contacts.services): locked sources refuse marketing.
                contacts_creation_policy(
                    source=source, requested_marketing=cleaned.get("marketing") or None
                )
            except LockedSourceError as error:
                self.add_error("marketing", str(error))
        return cleaned


class ContactAddFormWithoutStatus(ContactAddForm):
    """For users without contacts.change_marketing_status: no status to choose, and the
    source is a record of where the contact came from (the creation rule makes a contact
    created by hand by such a user non-marketing, whatever the source's default)."""

    marketing = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        source = self.fields.get("source")
        if source is not None:
            source.help_text = (
                "Where the contact comes from. Contacts you create are non-marketing whatever "
                "the source (creating marketing contacts needs the permission to change the "
                "marketing status)."
            )


class BulkStatusConfirmForm(forms.Form):
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=100)
    confirm_count = forms.CharField(
        required=False,
        max_length=20,
        label="Number of contacts that will change",
        widget=forms.TextInput(attrs={"autocomplete": "off", "inputmode": "numeric"}),
    )

    def __init__(self, *args, expected: int, require_count: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.expected = expected
        if not require_count:
            del self.fields["confirm_count"]

    def clean_confirm_count(self):
        typed = self.cleaned_data.get("confirm_count") or ""
        digits = "".join(ch for ch in typed if ch not in ", _'\u00a0\u202f")
        if not digits.isdigit() or int(digits) != self.expected:
            raise ValidationError(
                f"Type {self.expected:,} (the number of contacts that will change) to confirm."
            )
        return int(digits)


ADD_FIELDSETS_HEAD = [(None, {"fields": ["email", "first_name", "last_name", "company", "phone"]})]
CRM_FIELDSET = (
    "CRM",
    {"fields": ["lifecycle_stage", "lead_status", "contact_type"]},
)
CONSENT_FIELDSET = (
    "Consent",
    {
        "fields": ["unsubscribed", "hard_bounced"],
        "description": "Unsubscribed or bounced contacts get no marketing email, "
        "whatever their marketing status.",
    },
)
STATUS_READONLY_FIELDS = [
    "marketing_status_display",
    "pending_from_display",
    "marketing_reason_display",
    "marketing_changed_at",
    "source",
]
CHANGE_READONLY_FIELDS = [
    *STATUS_READONLY_FIELDS,
    "lead_score",
    "last_engaged_at",
    "created_at",
    "updated_at",
]


@admin.register(Contact)
class ContactAdmin(
    FilterAliasesMixin,
    ContactDeletionMixin,
    ContactMergeMixin,
    ContactStatusConfirmationMixin,
    BigTableAdmin,
):
    list_display = [
        "email",
        "name_display",
        "status_column",
        "source",
        "lifecycle_stage",
        "lead_score",
        "last_engaged_at",
    ]
    list_select_related = ["source"]
    # Only indexed columns sort: an unindexed ORDER BY sorts the whole table (lead_score and
    # last_engaged_at are unindexed on purpose, see Contact).
    sortable_by = ["email", "lifecycle_stage"]
    list_filter = [
        MarketingStatusFilter,
        PendingFilter,
        SourceKindFilter,
        LifecycleStageFilter,
        LeadStatusFilter,
        ContactTypeFilter,
        "unsubscribed",
        "hard_bounced",
        ContactListFilter,
        AdAudienceFilter,
        UnengagedFilter,
    ]
    # The box needs search_fields; get_search_results below does the matching.
    search_fields = ["email", "first_name", "last_name", "company"]
    search_help_text = "The start of an email address, a first or last name, or a company."
    autocomplete_fields = ["source"]
    actions = [
        "set_marketing_action",
        "set_non_marketing_action",
        "export_csv_action",
        "add_to_ad_audience_action",
        "remove_from_ad_audience_action",
        "delete_contacts_action",
        "merge_contacts_action",
    ]
    form = ContactForm
    bulk_confirm_form = BulkStatusConfirmForm

    def get_queryset(self, request):
        queryset = contact_list()
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    def get_ordering(self, request):
        """Newest first. The "unengaged for" list is newest created first: it skips every
        contact created in the last N days, so the primary key, walked newest first, would
        pass over all of them (a tenth of the table at 90 days) before its first row; the
        created_at index starts at the cutoff (contacts_contact_created_at index). Ids
        follow creation, so the order a person sees is the same."""
        if request.GET.get(UnengagedFilter.parameter_name):
            return ["-created_at", "-id"]
        return super().get_ordering(request)

    def get_search_results(self, request, queryset, search_term):
        """Prefix matches only: emails are stored lower-case, so `email LIKE 'ann%'` uses the
        unique index's pattern-ops twin on PostgreSQL; names and company use the prefix
        indexes over UPPER(column) (contact_name_prefix, led by the first name;
        contact_last_name_prefix, contact_company_prefix); a term with "@" searches emails
        only."""
        terms = search_term.split()
        for term in terms:
            branches = search_branches(term)
            if len(terms) == 1:
                # One word: the OR of its branches over the filtered list. For the
                # changelist's count (get_paginator): a branch with more contacts than the
                # cap shows "more than 10,000" without the whole OR being counted.
                request.search_parts = [queryset.filter(b) for b in branches]
            queryset = queryset.filter(reduce(operator.or_, branches))
        return queryset, False

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        paginator = super().get_paginator(
            request, queryset, per_page, orphans, allow_empty_first_page
        )
        paginator.parts = getattr(request, "search_parts", ())
        return paginator

    @admin.display(description="Name and company")
    def name_display(self, obj: Contact) -> str:
        # The company under the name: one column fewer, so the list fits a laptop screen.
        if not obj.company:
            return obj.full_name or self.get_empty_value_display()
        return format_html('{}<br><span class="quiet">{}</span>', obj.full_name, obj.company)

    @admin.display(description="Marketing status")
    def marketing_status_display(self, obj: Contact) -> str:
        return MarketingStatus(obj.effective_status(timezone.now())).label

    @admin.display(description="Marketing status")
    def status_column(self, obj: Contact) -> str:
        """The status with its pending change in one cell: "Marketing, non-marketing from
        1 Jan 2027" (one column fewer in the list)."""
        now = timezone.now()
        status = MarketingStatus(obj.effective_status(now)).label
        pending = obj.pending_from(now)
        return f"{status}, non-marketing from {format_day(pending)}" if pending else status

    @admin.display(description="Non-marketing from")
    def pending_from_display(self, obj: Contact) -> str:
        pending = obj.pending_from(timezone.now())
        return format_day(pending) if pending else self.get_empty_value_display()

    @admin.display(description="Reason")
    def marketing_reason_display(self, obj: Contact) -> str:
        if not obj.marketing_reason_type:
            return self.get_empty_value_display()
        return status_reason_text(
            obj.marketing_reason_type, obj.marketing_reason_id, obj.marketing_reason_name
        )

    def has_change_marketing_status_permission(self, request) -> bool:
        return can_change_marketing_status(request.user)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            status_fields = ["source"]
            if can_change_marketing_status(request.user):
                status_fields.append("marketing")
            return [
                *ADD_FIELDSETS_HEAD,
                ("Marketing status", {"fields": status_fields}),
                CRM_FIELDSET,
                CONSENT_FIELDSET,
            ]
        return [
            *ADD_FIELDSETS_HEAD,
            ("Marketing status", {"fields": STATUS_READONLY_FIELDS}),
            (
                "CRM",
                {"fields": [*CRM_FIELDSET[1]["fields"], "lead_score", "last_engaged_at"]},
            ),
            CONSENT_FIELDSET,
            ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
        ]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else CHANGE_READONLY_FIELDS

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = (
                ContactAddForm
                if can_change_marketing_status(request.user)
                else ContactAddFormWithoutStatus
            )
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        if change:
            fields = {
                name: data[name] for name in form.changed_data if name in CONTACT_EDITABLE_FIELDS
            }
            if fields:
                contact_update(contact=obj, **fields)
            return
        fields = {
            name: data[name]
            for name in form.fields
            if name in CONTACT_EDITABLE_FIELDS and name != "email" and name in data
        }
        # The creation rule decides, given the user: without the status permission the
        # contact is non-marketing whatever its source (the form offers no status then).
        contact = contact_create(
            email=data["email"],
            source=data.get("source") or source_for_manual_entry(),
            actor=request.user,
            marketing=True if data.get("marketing") else None,
            status_source=manual_status_source(request.user),
            **fields,
        )
        # The admin goes on with `obj` (log entry, redirect): make it the created row.
        for field in Contact._meta.concrete_fields:
            setattr(obj, field.attname, getattr(contact, field.attname))
        obj._state.adding = False
        obj._state.db = contact._state.db
        if contact.marketing_held:  # past the guardrails: stored non-marketing, upgrade held
            messages.warning(
                request, f"The contact was created non-marketing. {contact.marketing_held}"
            )

    def get_actions(self, request):
        actions = super().get_actions(request)
        # Django's collects every related row in Python: "Delete selected contacts" instead.
        actions.pop("delete_selected", None)
        return actions

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/marketing-status/",
                self.admin_site.admin_view(self.marketing_status_view),
                name="{}_{}_marketing_status".format(*info),
            ),
            path(
                "export/",
                self.admin_site.admin_view(self.export_view),
                name="{}_{}_export".format(*info),
            ),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.pk is not None:
            now = timezone.now()
            pending = obj.pending_from(now)
            context["marketing_panel"] = {
                "status": MarketingStatus(obj.effective_status(now)).label,
                "marketing": obj.is_billable(now),
                "pending_from": pending,
                "reason": (self.marketing_reason_display(obj) if obj.marketing_reason_type else ""),
                "changed_at": obj.marketing_changed_at,
                "can_change": can_change_marketing_status(request.user),
                "url": reverse(
                    f"{self.admin_site.name}:contacts_contact_marketing_status",
                    args=[quote(obj.pk)],
                ),
            }
            history = list(contact_status_history(contact_id=obj.pk)[:CONTACT_PAGE_LEDGER_ROWS])
            context["status_history"] = history
            context["status_history_limit"] = CONTACT_PAGE_LEDGER_ROWS
            if len(history) == CONTACT_PAGE_LEDGER_ROWS and request.user.has_perm(
                "contacts.view_statuschange"
            ):
                context["status_history_url"] = (
                    reverse(f"{self.admin_site.name}:contacts_statuschange_changelist")
                    + f"?contact_id={obj.pk}"
                )
        return super().render_change_form(
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )

    def marketing_status_view(self, request, object_id):
        """POST only: set one contact marketing or non-marketing, as the person asking."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_marketing_status_permission(request):
            raise PermissionDenied
        contact = self.get_object(request, unquote(object_id))
        if contact is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_or_change_permission(request, contact):
            raise PermissionDenied
        operation = request.POST.get("operation")
        if operation not in (SET_MARKETING, SET_NON_MARKETING):
            return HttpResponseBadRequest("Unknown operation.")
        if request.POST.get("confirmed") != "yes":
            preview = contacts_status_preview(contacts=[contact.pk], operation=operation)
            if asks_confirmation(preview):
                return self._status_confirmation(request, contact, preview)
        now = timezone.now()
        was_pending = contact.pending_from(now)
        try:
            if operation == SET_MARKETING:
                result = contacts_set_marketing(
                    contacts=contact,
                    source=manual_status_source(request.user),
                    actor=request.user,
                    guarded=True,
                )
            else:
                result = contacts_set_non_marketing(
                    contacts=contact, source=manual_status_source(request.user), actor=request.user
                )
        except ChangeHeld as held:
            self.message_user(request, held_message(held), messages.WARNING)
            return HttpResponseRedirect(
                reverse(
                    f"{self.admin_site.name}:contacts_contact_change",
                    args=[quote(contact.pk)],
                )
            )
        with timezone.override(account_time_zone()):
            if operation == SET_MARKETING:
                if result.changed:
                    text = f"“{contact}” is now marketing; it counts toward this period at once."
                elif result.cancelled:
                    text = (
                        f"“{contact}” stays marketing: its pending change to non-marketing "
                        "was cancelled, at no extra cost."
                    )
                else:
                    text = f"“{contact}” was already marketing; nothing changed."
            elif result.scheduled:
                text = (
                    f"“{contact}” is non-marketing from {format_day(result.effective_from)}; "
                    "it stays marketing and billable until then."
                )
            elif was_pending:
                text = f"“{contact}” is already non-marketing from {format_day(was_pending)}."
            else:
                text = f"“{contact}” was already non-marketing; nothing changed."
        level = (
            messages.SUCCESS
            if result.changed or result.cancelled or result.scheduled
            else (messages.INFO)
        )
        self.message_user(request, text, level)
        return HttpResponseRedirect(
            reverse(
                f"{self.admin_site.name}:contacts_contact_change",
                args=[quote(contact.pk)],
            )
        )

    @admin.action(description="Set as marketing", permissions=["change_marketing_status"])
    def set_marketing_action(self, request, queryset):
        return self._bulk_status(request, queryset, SET_MARKETING, "set_marketing_action")

    @admin.action(description="Set as non-marketing", permissions=["change_marketing_status"])
    def set_non_marketing_action(self, request, queryset):
        return self._bulk_status(request, queryset, SET_NON_MARKETING, "set_non_marketing_action")

    def _bulk_status(self, request, queryset, operation: str, action_name: str):
        preview = contacts_status_preview(contacts=queryset, operation=operation)
        to_change = preview.would_change + preview.would_cancel + preview.would_schedule
        threshold = getattr(settings, "MARKETING_CONFIRM_THRESHOLD", 1_000)
        require_count = to_change > threshold
        select_across = request.POST.get("select_across") == "1"
        # "All N matching", or more than the threshold: a background job with progress.
        background = select_across or preview.matched > bulk_status_job_threshold()
        confirming = request.POST.get("post") == "yes"
        form = BulkStatusConfirmForm(
            request.POST if confirming else None,
            expected=to_change,
            require_count=require_count,
            initial={"idempotency_key": f"admin-bulk:{uuid.uuid4()}"},
        )
        if confirming and form.is_valid():
            if background:
                return self._start_bulk_job(
                    request, queryset, operation, form.cleaned_data, select_across=select_across
                )
            self._run_bulk_status(request, queryset, operation, form.cleaned_data)
            return None  # back to the changelist, filters kept
        context = {
            **self.admin_site.each_context(request),
            "title": "Set as marketing?" if operation == SET_MARKETING else "Set as non-marketing?",
            "subtitle": None,
            "opts": self.opts,
            "media": self.media,
            "preview": preview,
            "operation": operation,
            "set_marketing": operation == SET_MARKETING,
            "to_change": to_change,
            "peak_increase": preview.peak_after - preview.peak_count,
            "require_count": require_count,
            "threshold": threshold,
            "background": background,
            "sample": list(queryset.order_by("pk")[:CONFIRMATION_SAMPLE]),
            "form": form,
            "action_name": action_name,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across") or "0",
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/contacts/contact/marketing_confirmation.html", context
        )

    def _run_bulk_status(self, request, queryset, operation: str, data: dict) -> None:
        source = StatusSource(StatusSourceType.BULK_ACTION, name="Admin bulk action")
        try:
            if operation == SET_MARKETING:
                # Guarded: past the guardrails the change waits for approval (ChangeHeld).
                result = contacts_set_marketing(
                    contacts=queryset,
                    source=source,
                    actor=request.user,
                    idempotency_key=data["idempotency_key"],
                    guarded=True,
                )
            else:
                result = contacts_set_non_marketing(
                    contacts=queryset,
                    source=source,
                    actor=request.user,
                    idempotency_key=data["idempotency_key"],
                )
        except ChangeHeld as held:
            self.message_user(request, held_message(held), messages.WARNING)
            return
        except IdempotencyConflict:
            self.message_user(
                request,
                "This confirmation was already submitted; nothing more was changed.",
                messages.WARNING,
            )
            return
        if result.replayed:
            self.message_user(
                request,
                "This confirmation was already submitted; nothing more was changed.",
                messages.WARNING,
            )
            return
        if operation == SET_MARKETING:
            text = (
                f"{counted(result.changed, 'contact')} now marketing, "
                f"{counted(result.cancelled, 'pending downgrade')} cancelled, "
                f"{result.already:,} already marketing."
            )
        else:
            text = f"{counted(result.scheduled, 'contact')} non-marketing from " + (
                format_day(result.effective_from) if result.effective_from else "the next update"
            )
            text += f" (billable until then), {result.already:,} already non-marketing."
        text += f" Live count {result.live_count:,}, this period's peak {result.peak_count:,}."
        self.message_user(request, text, messages.SUCCESS)

    @admin.action(description="Export selected to CSV", permissions=["view"])
    def export_csv_action(self, request, queryset):
        return export_response(queryset, timezone.now())

    def export_view(self, request):
        """ "Export all matching": the changelist's own filters and search, streamed as CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            changelist = self.get_changelist_instance(request)
        except IncorrectLookupParameters:
            return HttpResponseBadRequest("These list filters are not valid.")
        return export_response(changelist.queryset, timezone.now())

    def has_change_adaudience_permission(self, request) -> bool:
        return request.user.has_perm("contacts.change_adaudience")

    @admin.action(description="Add to ad audience…", permissions=["change_adaudience"])
    def add_to_ad_audience_action(self, request, queryset):
        return self._ad_audience(request, queryset, "add", "add_to_ad_audience_action")

    @admin.action(description="Remove from ad audience…", permissions=["change_adaudience"])
    def remove_from_ad_audience_action(self, request, queryset):
        return self._ad_audience(request, queryset, "remove", "remove_from_ad_audience_action")

    def _ad_audience(self, request, queryset, operation: str, action_name: str):
        """Choose the audience, see the breakdown, confirm (three posts of one page)."""
        service = ad_audience_add if operation == "add" else ad_audience_remove
        form = AdAudienceChoiceForm(request.POST if "audience" in request.POST else None)
        change = None
        if form.is_bound and form.is_valid():
            audience = form.cleaned_data["audience"]
            if request.POST.get("post") == "yes":
                change = service(audience=audience, contacts=queryset, actor=request.user)
                self.message_user(request, membership_message(change, audience), messages.SUCCESS)
                return None
            change = service(audience=audience, contacts=queryset, preview=True)
        context = {
            **self.admin_site.each_context(request),
            "title": "Add to ad audience" if operation == "add" else "Remove from ad audience",
            "subtitle": None,
            "opts": self.opts,
            "media": self.media,
            "form": form,
            "change": change,
            "adding": operation == "add",
            "action_name": action_name,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across") or "0",
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/contacts/contact/ad_audience_confirmation.html", context
        )


class SourceForm(forms.ModelForm):
    class Meta:
        model = Source
        fields = ["name", "kind", "default_marketing"]

    def clean(self):
        cleaned = super().clean()
        kind = cleaned.get("kind", self.instance.kind)
        default_marketing = cleaned.get("default_marketing", self.instance.default_marketing)
        if kind in LOCKED_KINDS and default_marketing:
            self.add_error(
                "default_marketing" if "default_marketing" in self.fields else "kind",
                f"{SourceKind(kind).label} sources are locked: their contacts are always "
                "non-marketing.",
            )
        return cleaned


@admin.register(Source)
class SourceAdmin(admin.ModelAdmin):
    form = SourceForm
    list_display = ["name", "kind", "default_marketing", "locked_display"]
    list_filter = ["kind", "default_marketing"]
    search_fields = ["name"]

    def get_queryset(self, request):
        queryset = source_list()
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    @admin.display(description="Locked", boolean=True)
    def locked_display(self, obj: Source) -> bool:
        return obj.locked

    def get_fieldsets(self, request, obj=None):
        return [
            (
                None,
                {
                    "fields": ["name", "kind", "default_marketing"],
                    "description": (
                        "New contacts from this source are created with its default status. "
                        "Forms, external forms and ads leads are usually marketing; imports, "
                        "chatflows, integrations and hand-made contacts non-marketing. "
                        "Mobile app, email logging, team inbox, documents, meetings and the "
                        "email extension are locked: always non-marketing."
                    ),
                },
            ),
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.locked:
            return ["default_marketing"]
        if obj is not None and source_channel(obj) is not None:
            # Set on its form, chatflow, app or ad account (see the intake section below).
            return ["kind", "default_marketing"]
        return []

    def get_actions(self, request):
        actions = super().get_actions(request)
        # A source with contacts cannot be deleted (PROTECT); one at a time gives a clear message.
        actions.pop("delete_selected", None)
        return actions

    def delete_view(self, request, object_id, extra_context=None):
        source = self.get_object(request, unquote(object_id))
        if source is not None and self.has_delete_permission(request, source):
            used_by = capped_count(source.contacts.all())  # contacts_contact source_id index
            if used_by:
                many = "more than 10,000" if used_by > 10_000 else f"{used_by:,}"
                self.message_user(
                    request,
                    f"The source “{source}” cannot be deleted: {many} contacts came from it and "
                    "keep it as their source. Delete those contacts first, or keep the source.",
                    messages.ERROR,
                )
                return HttpResponseRedirect(
                    reverse(
                        f"{self.admin_site.name}:contacts_source_change", args=[quote(source.pk)]
                    )
                )
        return super().delete_view(request, object_id, extra_context)


# Each concern registers its own admins.
from contacts.status import admin as status_admin  # noqa: E402, F401, I001
from contacts.intake import admin as intake_admin  # noqa: E402, F401
from contacts.imports import admin as imports_admin  # noqa: E402, F401
from contacts.outreach import admin as outreach_admin  # noqa: E402, F401
from contacts.engagement import admin as engagement_admin  # noqa: E402, F401
