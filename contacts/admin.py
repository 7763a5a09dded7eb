"""The contacts admin: contacts, sources, the status ledger and the usage counters.

Every write goes through `contacts.services`: creating a contact
(`contact_create`, so the source's default applies), editing its ordinary fields
(`contact_update`), changing its marketing status (`contacts_set_marketing` /
`contacts_set_non_marketing`, from the contact page or a bulk action) and
deleting it (`contacts_delete`, so a billable contact lowers the live count and
leaves a ledger row). Django's `delete_selected` is off: it would delete rows
behind the counters' back.

Bulk status actions show the service's preview first and, above
`settings.MARKETING_CONFIRM_THRESHOLD` contacts, ask the user to type the
number. The confirmation carries an idempotency key made when the page is
rendered, so submitting it twice changes the contacts once.

Setting contacts marketing (bulk or one contact) is *guarded*: past the billing
guardrails the service raises `ChangeHeld`, nothing changes and the user is told
the change waits for approval. The preview's money (`preview.extra["cost"]`) is
added by billing through the preview hook and drawn by billing's own template;
this module imports nothing from billing (DESIGN §2).
"""

from __future__ import annotations

import datetime as dt
import uuid

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Exists, OuterRef, Q
from django.http import (
    Http404,
    HttpResponseBadRequest,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html

from contacts.api.views import import_errors_csv_response
from contacts.models import (
    LOCKED_KINDS,
    AdAccount,
    AdAudience,
    AdLead,
    Chatflow,
    Communication,
    ConnectedApp,
    Contact,
    ContactImport,
    ContactList,
    EmailSend,
    EmailSendStatus,
    EngagementEvent,
    Form,
    FormSubmission,
    ImportStatus,
    MarketingEmail,
    MarketingEmailStatus,
    MarketingStatus,
    PeriodUsage,
    Source,
    SourceKind,
    StatusChange,
    StatusChangeRequest,
    StatusSourceType,
    Unsubscription,
    normalise_email,
)
from contacts.selectors import (
    contact_import_list,
    contact_list,
    contact_status_history,
    import_sources,
    marketing_email_audience,
    marketing_send_breakdown,
    source_for_manual_entry,
    source_list,
)
from contacts.services import (
    CONTACT_EDITABLE_FIELDS,
    IMPORT_DEFAULT_SOURCE,
    IMPORT_FIELDS,
    SET_MARKETING,
    SET_NON_MARKETING,
    AlreadySent,
    ChangeHeld,
    IdempotencyConflict,
    ImportFileError,
    ImportNotAllowed,
    ImportStateError,
    LockedSourceError,
    MembershipChange,
    StatusSource,
    ad_account_create,
    ad_account_save,
    ad_audience_add,
    ad_audience_remove,
    chatflow_save,
    communication_send,
    connected_app_create,
    connected_app_set_marketing,
    contact_create,
    contact_import_commit,
    contact_import_configure,
    contact_import_create,
    contact_import_discard,
    contact_import_preview,
    contact_import_sync,
    contact_update,
    contacts_creation_policy,
    contacts_delete,
    contacts_set_marketing,
    contacts_set_non_marketing,
    contacts_status_preview,
    form_creates_marketing,
    form_save,
    import_check_size,
    import_max_bytes,
    intake_token_issue,
    marketing_email_create,
    marketing_email_delete,
    marketing_email_release_stale_claims,
    marketing_email_send,
    marketing_email_update,
)
from contacts.views import export_response
from crm.admin import (
    AccountTimeZoneMixin,
    BigTableAdmin,
    ReadOnlyAdminMixin,
    account_time_zone,
    capped_count,
)

MARKETING_STATUS_PERMISSION = "contacts.change_marketing_status"
# Ledger rows shown on a contact's page; the ledger admin has the rest.
CONTACT_PAGE_LEDGER_ROWS = 50


def can_change_marketing_status(user) -> bool:
    return user.has_perm(MARKETING_STATUS_PERMISSION)


def format_day(value) -> str:
    """An instant as a day in the active time zone (the account's, in these views)."""
    return date_format(timezone.localtime(value), "j F Y")


def held_message(held: ChangeHeld) -> str:
    """A change the guardrails held: nothing changed; the guard's message says what waits."""
    return f"Nothing was changed yet. {held}"


def manual_status_source(user) -> StatusSource:
    return StatusSource(StatusSourceType.MANUAL, id=str(user.pk), name=user.get_username())


# --- contacts ----------------------------------------------------------------


class MarketingStatusFilter(admin.SimpleListFilter):
    """The *effective* status now: a contact whose pending date has passed is non-marketing
    even before the rollover has caught its stored status up."""

    title = "marketing status"
    parameter_name = "marketing"

    def lookups(self, request, model_admin):
        return [
            ("marketing", "Marketing"),
            ("non_marketing", "Non-marketing"),
            ("pending", "Pending non-marketing (from the next update date)"),
            ("settled", "Marketing, no pending change"),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        value = self.value()
        if value == "marketing":
            return queryset.billable(now)
        if value == "non_marketing":
            return queryset.not_billable(now)
        if value == "pending":
            return queryset.pending_downgrade(now)  # contact_pending_idx
        if value == "settled":  # what a hygiene pass or the savings report can still demote
            return queryset.filter(marketing_status="marketing", marketing_until__isnull=True)
        return queryset


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


class SourceKindFilter(admin.ChoicesFieldListFilter):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.title = "source kind"


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
    """For users without contacts.change_marketing_status: the source's default applies."""

    marketing = None


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
                f"Type {self.expected} (the number of contacts that will change) to confirm."
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
class ContactAdmin(AccountTimeZoneMixin, BigTableAdmin):
    list_display = [
        "email",
        "name_display",
        "company",
        "marketing_status_display",
        "pending_from_display",
        "source",
        "lifecycle_stage",
        "lead_score",
        "last_engaged_at",
    ]
    list_select_related = ["source"]
    # Only indexed columns sort: an unindexed ORDER BY sorts the whole table.
    sortable_by = ["email", "lifecycle_stage", "lead_score", "last_engaged_at"]
    list_filter = [
        MarketingStatusFilter,
        ("source__kind", SourceKindFilter),
        "lifecycle_stage",
        "lead_status",
        "contact_type",
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
    ]
    form = ContactForm

    # --- reads

    def get_queryset(self, request):
        queryset = contact_list()
        ordering = self.get_ordering(request)
        return queryset.order_by(*ordering) if ordering else queryset

    def get_search_results(self, request, queryset, search_term):
        """Prefix matches only: emails are stored lower-case, so `email LIKE 'ann%'` uses the
        unique index's pattern-ops twin on PostgreSQL; a term with "@" searches emails only."""
        for term in search_term.split():
            match = Q(email__startswith=normalise_email(term))
            if "@" not in term:
                match |= (
                    Q(first_name__istartswith=term)
                    | Q(last_name__istartswith=term)
                    | Q(company__istartswith=term)
                )
            queryset = queryset.filter(match)
        return queryset, False

    # --- columns and read-only fields

    @admin.display(description="Name")
    def name_display(self, obj: Contact) -> str:
        return obj.full_name

    @admin.display(description="Marketing status")
    def marketing_status_display(self, obj: Contact) -> str:
        return MarketingStatus(obj.effective_status(timezone.now())).label

    @admin.display(description="Non-marketing from")
    def pending_from_display(self, obj: Contact) -> str:
        pending = obj.pending_from(timezone.now())
        return format_day(pending) if pending else self.get_empty_value_display()

    @admin.display(description="Reason")
    def marketing_reason_display(self, obj: Contact) -> str:
        if not obj.marketing_reason_type:
            return self.get_empty_value_display()
        parts = [obj.get_marketing_reason_type_display()]
        if obj.marketing_reason_id:
            parts.append(f"#{obj.marketing_reason_id}")
        if obj.marketing_reason_name:
            parts.append(f"“{obj.marketing_reason_name}”")
        return " ".join(parts)

    # --- forms

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
        chose_marketing = bool(data.get("marketing")) and can_change_marketing_status(request.user)
        fields = {
            name: data[name]
            for name in form.fields
            if name in CONTACT_EDITABLE_FIELDS and name != "email" and name in data
        }
        contact = contact_create(
            email=data["email"],
            source=data.get("source") or source_for_manual_entry(),
            actor=request.user,
            marketing=True if chose_marketing else None,
            status_source=manual_status_source(request.user) if chose_marketing else None,
            **fields,
        )
        # The admin goes on with `obj` (log entry, redirect): make it the created row.
        for field in Contact._meta.concrete_fields:
            setattr(obj, field.attname, getattr(contact, field.attname))
        obj._state.adding = False
        obj._state.db = contact._state.db

    # --- deletion

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def delete_model(self, request, obj):
        contacts_delete(
            contacts=obj,
            actor=request.user,
            source=StatusSource(StatusSourceType.DELETION, name="Admin"),
        )

    def delete_queryset(self, request, queryset):
        contacts_delete(
            contacts=queryset,
            actor=request.user,
            source=StatusSource(StatusSourceType.DELETION, name="Admin"),
        )

    def render_delete_form(self, request, context):
        obj = context.get("object")
        if obj is not None:
            context["marketing_now"] = obj.is_billable(timezone.now())
        return super().render_delete_form(request, context)

    # --- the change page: status panel, toggle, ledger

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

    # --- bulk status actions

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
        confirming = request.POST.get("post") == "yes"
        form = BulkStatusConfirmForm(
            request.POST if confirming else None,
            expected=to_change,
            require_count=require_count,
            initial={"idempotency_key": f"admin-bulk:{uuid.uuid4()}"},
        )
        if confirming and form.is_valid():
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
                f"{result.changed} contacts are now marketing, {result.cancelled} pending "
                f"downgrades were cancelled, {result.already} were already marketing."
            )
        else:
            text = f"{result.scheduled} contacts are non-marketing from " + (
                format_day(result.effective_from) if result.effective_from else "the next update"
            )
            text += f" (billable until then), {result.already} were already non-marketing."
        text += f" Live count {result.live_count:,}, this period's peak {result.peak_count:,}."
        self.message_user(request, text, messages.SUCCESS)

    # --- communications: CSV export, ad audiences

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


# --- sources -------------------------------------------------------------------


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


# --- the ledger and the counters ------------------------------------------------


@admin.register(StatusChange)
class StatusChangeAdmin(ReadOnlyAdminMixin, AccountTimeZoneMixin, BigTableAdmin):
    list_display = [
        "id",
        "contact_display",
        "action",
        "from_status",
        "to_status",
        "requested_at",
        "effective_at",
        "delta",
        "source_type",
        "source_id",
        "source_name",
        "actor",
    ]
    list_display_links = ["id"]
    list_select_related = ["actor"]
    list_filter = ["action", "source_type"]
    sortable_by = ["id", "effective_at"]
    search_fields = ["source_name"]
    search_help_text = "A contact id, or the start of a source name."

    def get_queryset(self, request):
        # No select_related("contact"): the row outlives its contact (no FK constraint), and
        # an inner join would hide it. Exists() is one primary-key probe per row shown.
        return (
            super()
            .get_queryset(request)
            .annotate(contact_exists=Exists(Contact.objects.filter(pk=OuterRef("contact_id"))))
        )

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.isdigit():
            return queryset.filter(contact_id=int(term)), False  # statuschange_contact_idx
        return queryset.filter(source_name__istartswith=term), False

    @admin.display(description="Contact", ordering="contact_id")
    def contact_display(self, obj: StatusChange):
        if getattr(obj, "contact_exists", False):
            url = reverse(
                f"{self.admin_site.name}:contacts_contact_change", args=[quote(obj.contact_id)]
            )
            return format_html('<a href="{}">{}</a>', url, obj.contact_id)
        return format_html("{} <span class='quiet'>(deleted)</span>", obj.contact_id)


@admin.register(StatusChangeRequest)
class StatusChangeRequestAdmin(ReadOnlyAdminMixin, AccountTimeZoneMixin, BigTableAdmin):
    list_display = [
        "id",
        "operation",
        "idempotency_key",
        "source_type",
        "source_name",
        "actor",
        "requested_at",
        "result_summary",
    ]
    list_select_related = ["actor"]
    list_filter = ["operation", "source_type"]
    sortable_by = ["id"]
    search_fields = ["=idempotency_key"]
    search_help_text = "An exact idempotency key."

    @admin.display(description="Result")
    def result_summary(self, obj: StatusChangeRequest) -> str:
        result = obj.result or {}
        keys = ("matched", "changed", "scheduled", "cancelled", "already", "applied")
        return ", ".join(f"{key} {result[key]}" for key in keys if result.get(key))


@admin.register(PeriodUsage)
class PeriodUsageAdmin(ReadOnlyAdminMixin, AccountTimeZoneMixin, admin.ModelAdmin):
    list_display = [
        "period_start",
        "period_end",
        "opening_count",
        "live_count",
        "peak_count",
        "scheduled_downgrades",
        "updated_at",
    ]


# --- intake ---
#
# Forms, chatflows, connected apps and ad accounts: every save goes through their service
# (which creates the channel's own Source and keeps its default in step). Connected apps'
# and ad accounts' tokens are stored hashed: the admin shows a new token once, in a message.


def source_channel(source: Source):
    """The form, chatflow, connected app or ad account that owns this source, if any."""
    for model in (Form, Chatflow, ConnectedApp, AdAccount):
        owner = model.objects.filter(source=source).first()
        if owner is not None:
            return owner
    return None


def _token_message(admin_obj, request, holder, token: str) -> None:
    admin_obj.message_user(
        request,
        format_html(
            "The token of “{}” is <code>{}</code>. Copy it now: it is shown only this once "
            "(only its hash is stored). Send it as the header "
            "<code>Authorization: Bearer &lt;token&gt;</code>.",
            holder,
            token,
        ),
        messages.WARNING,
    )


class FormAdminForm(forms.ModelForm):
    class Meta:
        model = Form
        fields = [
            "name",
            "slug",
            "fields",
            "consent_label",
            "consent_required",
            "create_as_marketing",
            "upgrade_existing",
            "success_message",
            "is_active",
        ]
        widgets = {"fields": forms.Textarea(attrs={"rows": 6, "cols": 80})}


@admin.register(Form)
class FormAdmin(admin.ModelAdmin):
    form = FormAdminForm
    list_display = [
        "name",
        "slug",
        "marketing_display",
        "upgrade_existing",
        "is_active",
        "submissions_display",
        "hosted_page",
    ]
    list_filter = ["is_active", "create_as_marketing", "upgrade_existing"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["source", "hosted_page", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "is_active", "hosted_page"]}),
        (
            "Questions",
            {
                "fields": ["fields", "consent_label", "consent_required", "success_message"],
                "description": "Email is always asked. List the other fields as JSON.",
            },
        ),
        (
            "Marketing status of new contacts",
            {
                "fields": ["create_as_marketing", "upgrade_existing", "source"],
                "description": (
                    "Empty “create as marketing” follows the account's default for forms "
                    "(Account › New contacts from forms). Marketing contacts are billable at "
                    "once. Upgrades of existing contacts are written to the status ledger with "
                    "this form as the reason."
                ),
            },
        ),
        ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]

    def get_queryset(self, request):
        # formsubmission_form_idx
        return super().get_queryset(request).annotate(submission_count=Count("submissions"))

    @admin.display(description="Creates marketing")
    def marketing_display(self, obj: Form) -> str:
        if obj.create_as_marketing is None:
            return f"{'Yes' if form_creates_marketing(obj) else 'No'} (account default)"
        return "Yes" if obj.create_as_marketing else "No"

    @admin.display(description="Submissions", ordering="submission_count")
    def submissions_display(self, obj: Form):
        count = getattr(obj, "submission_count", None)
        if count is None:
            count = obj.submissions.count()
        url = reverse(f"{self.admin_site.name}:contacts_formsubmission_changelist")
        return format_html('<a href="{}?form__id__exact={}">{}</a>', url, obj.pk, count)

    @admin.display(description="Hosted page")
    def hosted_page(self, obj: Form):
        if not obj.pk:
            return "(after saving)"
        url = reverse("contacts_public:form", args=[obj.slug])
        return format_html('<a href="{}" target="_blank" rel="noopener">View {}</a>', url, url)

    def save_model(self, request, obj, form, change):
        form_save(form=obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # forms with submissions are protected
        return actions


@admin.register(FormSubmission)
class FormSubmissionAdmin(ReadOnlyAdminMixin, AccountTimeZoneMixin, BigTableAdmin):
    list_display = [
        "id",
        "form",
        "external_form",
        "contact",
        "created_contact",
        "upgraded",
        "consent",
        "submitted_at",
    ]
    list_select_related = ["form", "contact"]
    list_filter = ["form", "created_contact", "upgraded"]
    sortable_by = ["id"]
    raw_id_fields = ["contact", "form"]
    search_fields = ["=contact__email"]
    search_help_text = "An exact email address."


def channel_forecast_display(source) -> str:
    """ "If switched on: …" for a channel's change page — the status preview's estimate."""
    from django.template import Context, Template
    from django.utils.formats import date_format

    from contacts.selectors import CHANNEL_RATE_DAYS, channel_marketing_forecast

    if source is None:
        return "—"
    forecast = channel_marketing_forecast(source=source)
    text = Template(
        "{% load billing_tags %}At the last {{ days }} days' rate ({{ f.created_recently }} new "
        "contacts), about {{ f.expected_new }} more would become marketing before {{ end }}"
        "{% if f.cost %}: this period's invoice {{ f.cost.invoice_delta|signed_money:f.cost.currency }}"
        "{% if f.cost.hold_reason %} (past the guardrails: {{ f.cost.hold_reason }}){% endif %}"
        "{% endif %}. An estimate: the contacts it creates decide."
    ).render(
        Context(
            {
                "f": forecast,
                "days": CHANNEL_RATE_DAYS,
                "end": date_format(timezone.localtime(forecast.period_end), "j F Y"),
            }
        )
    )
    return text


@admin.register(Chatflow)
class ChatflowAdmin(admin.ModelAdmin):
    list_display = ["name", "marketing", "is_active", "source"]
    list_filter = ["marketing", "is_active"]
    search_fields = ["name"]
    fields = ["name", "marketing", "if_switched_on", "is_active", "source"]
    readonly_fields = ["source", "if_switched_on"]

    @admin.display(description="If switched on")
    def if_switched_on(self, obj: Chatflow) -> str:
        if obj and obj.marketing:
            return "On: contacts it creates are marketing."
        return channel_forecast_display(obj.source if obj and obj.pk else None)

    def save_model(self, request, obj, form, change):
        chatflow_save(chatflow=obj)


class TokenHolderAdmin(admin.ModelAdmin):
    """Shared by connected apps and ad accounts: a token shown once, regenerated by an action."""

    actions = ["regenerate_token"]

    @admin.action(description="Regenerate the token (the old one stops working)")
    def regenerate_token(self, request, queryset):
        if not self.has_change_permission(request):
            raise PermissionDenied
        for holder in queryset:
            _token_message(self, request, holder, intake_token_issue(holder=holder))

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        if not self.has_change_permission(request):
            actions.pop("regenerate_token", None)
        return actions


@admin.register(ConnectedApp)
class ConnectedAppAdmin(TokenHolderAdmin):
    list_display = [
        "name",
        "marketing",
        "marketing_since",
        "two_way_sync",
        "is_active",
        "token_hint",
    ]
    list_filter = ["marketing", "two_way_sync", "is_active"]
    search_fields = ["name"]
    readonly_fields = [
        "marketing_enabled_at",
        "if_switched_on",
        "token_hint",
        "token_created_at",
        "source",
    ]
    fieldsets = [
        (None, {"fields": ["name", "is_active", "two_way_sync"]}),
        (
            "Marketing status of new contacts",
            {
                "fields": ["marketing", "if_switched_on", "marketing_enabled_at", "source"],
                "description": (
                    "When on, contacts this app creates from then on are marketing (billable at "
                    "once). Contacts it created before stay as they are; existing contacts are "
                    "never downgraded."
                ),
            },
        ),
        (
            "Token",
            {
                "fields": ["token_hint", "token_created_at"],
                "description": "Shown once when created; use the action “Regenerate the token” "
                "for a new one.",
            },
        ),
    ]

    @admin.display(description="If switched on")
    def if_switched_on(self, obj: ConnectedApp) -> str:
        if obj and obj.marketing:
            return "On: contacts it creates are marketing."
        return channel_forecast_display(obj.source if obj and obj.pk else None)

    @admin.display(description="Marketing since", ordering="marketing_enabled_at")
    def marketing_since(self, obj: ConnectedApp):
        if not obj.marketing_enabled_at:
            return self.get_empty_value_display()
        return timezone.localtime(obj.marketing_enabled_at).strftime("%Y-%m-%d %H:%M")

    def save_model(self, request, obj, form, change):
        if not change:
            app, token = connected_app_create(
                name=obj.name, marketing=obj.marketing, two_way_sync=obj.two_way_sync
            )
            if not obj.is_active:
                ConnectedApp.objects.filter(pk=app.pk).update(is_active=False)
            obj.pk, obj._state.adding = app.pk, False
            _token_message(self, request, app, token)
            return
        ConnectedApp.objects.filter(pk=obj.pk).update(
            name=obj.name, two_way_sync=obj.two_way_sync, is_active=obj.is_active
        )
        if "marketing" in form.changed_data:
            connected_app_set_marketing(app=obj, marketing=obj.marketing)


class AdAccountAdminForm(forms.ModelForm):
    class Meta:
        model = AdAccount
        fields = ["name", "platform", "marketing", "is_active"]


@admin.register(AdAccount)
class AdAccountAdmin(TokenHolderAdmin):
    form = AdAccountAdminForm
    list_display = ["name", "platform", "marketing", "is_active", "token_hint", "leads_url"]
    list_filter = ["platform", "marketing", "is_active"]
    search_fields = ["name"]
    readonly_fields = ["token_hint", "token_created_at", "source", "leads_url"]

    @admin.display(description="Webhook")
    def leads_url(self, obj: AdAccount):
        if not obj.pk:
            return "(after saving)"
        return format_html("<code>POST /api/intake/ads/{}/leads/</code>", obj.pk)

    def save_model(self, request, obj, form, change):
        if not change:
            account, token = ad_account_create(
                name=obj.name, platform=obj.platform, marketing=obj.marketing
            )
            if not obj.is_active:
                AdAccount.objects.filter(pk=account.pk).update(is_active=False)
            obj.pk, obj._state.adding = account.pk, False
            _token_message(self, request, account, token)
            return
        ad_account_save(ad_account=obj)


@admin.register(AdLead)
class AdLeadAdmin(ReadOnlyAdminMixin, AccountTimeZoneMixin, BigTableAdmin):
    list_display = ["id", "ad_account", "lead_id", "contact", "created_contact", "received_at"]
    list_select_related = ["ad_account", "contact"]
    list_filter = ["ad_account", "created_contact"]
    sortable_by = ["id"]
    search_fields = ["=lead_id"]
    search_help_text = "An exact platform lead id."


# --- imports ---------------------------------------------------------------------


class ImportUploadForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text="UTF-8 (with or without BOM), comma or semicolon separated, with a header row.",
    )
    source = forms.ModelChoiceField(
        queryset=Source.objects.none(),
        required=False,
        empty_label=f"“{IMPORT_DEFAULT_SOURCE}” (created when missing)",
        help_text="Recorded as the source of the contacts this import creates.",
    )
    marketing = forms.BooleanField(
        required=False,
        label="Set all contacts in this import as marketing",
        help_text="They count toward this period's bill at once. Contacts already marketing stay "
        "so; without this, no contact's status changes.",
    )

    def __init__(self, *args, can_mark_marketing: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["source"].queryset = import_sources()
        if not can_mark_marketing:
            del self.fields["marketing"]

    def clean_file(self):
        upload = self.cleaned_data["file"]
        try:
            import_check_size(upload.size)
        except ImportFileError as error:
            raise ValidationError(str(error)) from error
        return upload


class ImportMappingForm(forms.Form):
    """One select per column of the file, prefilled with the detected field."""

    def __init__(self, *args, contact_import: ContactImport, can_mark_marketing: bool, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [("", "— ignore this column —")] + [
            (name, spec.label) for name, spec in IMPORT_FIELDS.items()
        ]
        self.columns = [c for c in contact_import.columns if c]
        for number, column in enumerate(self.columns):
            self.fields[f"column_{number}"] = forms.ChoiceField(
                label=column,
                choices=choices,
                required=False,
                initial=contact_import.mapping.get(column, ""),
            )
        if can_mark_marketing:
            self.fields["marketing"] = forms.BooleanField(
                required=False,
                initial=contact_import.marketing,
                label="Set all contacts in this import as marketing",
            )

    def mapping(self) -> dict[str, str]:
        return {
            column: self.cleaned_data.get(f"column_{number}") or ""
            for number, column in enumerate(self.columns)
        }

    def column_fields(self):
        return [self[f"column_{number}"] for number in range(len(self.columns))]


IMPORT_ADD_PERMISSION = "contacts.add_contactimport"


@admin.register(ContactImport)
class ContactImportAdmin(AccountTimeZoneMixin, admin.ModelAdmin):
    """Imports: upload → mapping → preview → confirm → progress. Read-only once committed;
    every step calls contacts.services."""

    list_display = [
        "id",
        "file_name",
        "status",
        "progress_display",
        "rows",
        "created_count",
        "updated_count",
        "unchanged_count",
        "invalid_count",
        "marketing",
        "created_by",
        "created_at",
    ]
    list_display_links = ["id", "file_name"]
    list_filter = ["status", "marketing"]
    list_select_related = ["created_by", "source"]
    search_fields = ["file_name"]
    actions = None
    fieldsets = [
        (None, {"fields": ["file_name", "status", "phase", "message", "errors_link"]}),
        (
            "Counts",
            {
                "fields": [
                    "rows",
                    "created_count",
                    "updated_count",
                    "unchanged_count",
                    "invalid_count",
                    "duplicate_count",
                    "marketing_count",
                ]
            },
        ),
        (
            "Set-up",
            {"fields": ["source", "marketing", "mapping", "delimiter", "file_size", "file_hash"]},
        ),
        (
            "Record",
            {
                "fields": [
                    "created_by",
                    "committed_by",
                    "created_at",
                    "previewed_at",
                    "committed_at",
                    "started_at",
                    "finished_at",
                ]
            },
        ),
    ]

    def get_queryset(self, request):
        return contact_import_list()

    def get_readonly_fields(self, request, obj=None):
        return [name for _, options in self.fieldsets for name in options["fields"]]

    def has_change_permission(self, request, obj=None):
        return False  # an import is changed only through its steps

    def has_delete_permission(self, request, obj=None):
        # Only an import that never ran: a committed one is the record of what was imported.
        return (
            obj is not None
            and obj.status in (ImportStatus.DRAFT, ImportStatus.PREVIEWED, ImportStatus.FAILED)
            and request.user.has_perm("contacts.delete_contactimport")
        )

    def delete_model(self, request, obj):
        contact_import_discard(contact_import=obj)

    @admin.display(description="Progress")
    def progress_display(self, obj: ContactImport) -> str:
        if obj.status in (ImportStatus.QUEUED, ImportStatus.RUNNING):
            return f"{obj.progress_percent}% ({obj.phase or obj.status})"
        return obj.get_status_display()

    @admin.display(description="Row errors")
    def errors_link(self, obj: ContactImport):
        if not obj.invalid_count and not obj.duplicate_count:
            return "none"
        url = reverse(f"{self.admin_site.name}:contacts_contactimport_errors", args=[obj.pk])
        return format_html(
            '<a href="{}">Download the row errors (CSV)</a>: {} invalid, {} duplicate',
            url,
            obj.invalid_count,
            obj.duplicate_count,
        )

    # --- the steps

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path(
                "<int:pk>/mapping/", view(self.mapping_view), name="contacts_contactimport_mapping"
            ),
            path(
                "<int:pk>/preview/", view(self.preview_view), name="contacts_contactimport_preview"
            ),
            path(
                "<int:pk>/progress/",
                view(self.progress_view),
                name="contacts_contactimport_progress",
            ),
            path(
                "<int:pk>/errors.csv", view(self.errors_view), name="contacts_contactimport_errors"
            ),
            *super().get_urls(),
        ]

    def _url(self, name: str, pk: int) -> str:
        return reverse(f"{self.admin_site.name}:contacts_contactimport_{name}", args=[pk])

    def _render(self, request, template: str, title: str, **context):
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request,
            f"admin/contacts/contactimport/{template}",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "subtitle": None,
                "opts": self.opts,
                "media": self.media,
                **context,
            },
        )

    def _import_for_step(self, request, pk: int) -> ContactImport:
        if not self.has_add_permission(request):
            raise PermissionDenied
        contact_import = self.get_queryset(request).filter(pk=pk).first()
        if contact_import is None:
            raise Http404("No such import.")
        return contact_import

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        can_mark = can_change_marketing_status(request.user)
        form = ImportUploadForm(
            request.POST or None, request.FILES or None, can_mark_marketing=can_mark
        )
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                contact_import = contact_import_create(
                    file=upload,
                    file_name=upload.name,
                    actor=request.user,
                    source=form.cleaned_data.get("source"),
                    marketing=bool(form.cleaned_data.get("marketing")),
                )
            except ImportFileError as error:
                form.add_error("file", str(error))
            except ImportNotAllowed as error:
                form.add_error(None, str(error))
            else:
                return HttpResponseRedirect(self._url("mapping", contact_import.pk))
        return self._render(
            request,
            "upload.html",
            "Import contacts from a CSV file",
            form=form,
            max_bytes=import_max_bytes(),
        )

    def mapping_view(self, request, pk: int):
        contact_import = self._import_for_step(request, pk)
        if contact_import.status not in (ImportStatus.DRAFT, ImportStatus.PREVIEWED):
            return HttpResponseRedirect(self._change_url(contact_import))
        can_mark = can_change_marketing_status(request.user)
        form = ImportMappingForm(
            request.POST or None, contact_import=contact_import, can_mark_marketing=can_mark
        )
        if request.method == "POST" and form.is_valid():
            try:
                contact_import_configure(
                    contact_import=contact_import,
                    mapping=form.mapping(),
                    marketing=bool(form.cleaned_data.get("marketing", contact_import.marketing)),
                    actor=request.user,
                )
                contact_import_preview(contact_import=contact_import, actor=request.user)
            except (ImportFileError, ImportNotAllowed, ImportStateError) as error:
                form.add_error(None, str(error))
            else:
                return HttpResponseRedirect(self._url("preview", contact_import.pk))
        return self._render(
            request,
            "mapping.html",
            f"Map the columns of “{contact_import.file_name}”",
            form=form,
            contact_import=contact_import,
        )

    def _change_url(self, contact_import: ContactImport) -> str:
        return reverse(
            f"{self.admin_site.name}:contacts_contactimport_change", args=[contact_import.pk]
        )

    def preview_view(self, request, pk: int):
        contact_import = self._import_for_step(request, pk)
        if contact_import.status != ImportStatus.PREVIEWED:
            if contact_import.status == ImportStatus.DRAFT:
                return HttpResponseRedirect(self._url("mapping", contact_import.pk))
            return HttpResponseRedirect(self._change_url(contact_import))
        preview = contact_import.preview
        becomes = preview.get("becomes_marketing", 0)
        threshold = getattr(settings, "MARKETING_CONFIRM_THRESHOLD", 1_000)
        require_count = becomes > threshold
        error = ""
        if request.method == "POST":
            typed = "".join(ch for ch in request.POST.get("confirm_count", "") if ch.isdigit())
            if require_count and typed != str(becomes):
                error = f"Type {becomes} (the number of contacts that become marketing) to confirm."
            else:
                try:
                    contact_import_commit(contact_import=contact_import, actor=request.user)
                except (ImportNotAllowed, ImportStateError) as failure:
                    error = str(failure)
                else:
                    self.message_user(
                        request,
                        f"The import of “{contact_import.file_name}” is running in the background.",
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(self._change_url(contact_import))
        status_preview = preview.get("status_preview", {})
        return self._render(
            request,
            "preview.html",
            f"Import “{contact_import.file_name}”?",
            contact_import=contact_import,
            preview=preview,
            status_preview=status_preview,
            cost=(status_preview.get("extra") or {}).get("cost")
            if contact_import.marketing
            else None,
            require_count=require_count,
            threshold=threshold,
            error=error,
            errors_url=self._url("errors", contact_import.pk),
            mapping_url=self._url("mapping", contact_import.pk),
            fields={name: spec.label for name, spec in IMPORT_FIELDS.items()},
        )

    def progress_view(self, request, pk: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        contact_import = self.get_queryset(request).filter(pk=pk).first()
        if contact_import is None:
            raise Http404("No such import.")
        contact_import = contact_import_sync(contact_import=contact_import)
        return JsonResponse(
            {
                "status": contact_import.status,
                "status_display": contact_import.get_status_display(),
                "phase": contact_import.phase,
                "processed_rows": contact_import.processed_rows,
                "total_rows": contact_import.total_rows,
                "percent": contact_import.progress_percent,
                "finished": contact_import.status
                in (ImportStatus.DONE, ImportStatus.HELD, ImportStatus.FAILED),
            }
        )

    def errors_view(self, request, pk: int):
        if not self.has_view_permission(request):
            raise PermissionDenied
        contact_import = self.get_queryset(request).filter(pk=pk).first()
        if contact_import is None:
            raise Http404("No such import.")
        return import_errors_csv_response(contact_import)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        contact_import = self.get_queryset(request).filter(pk=object_id).first()
        extra_context = dict(extra_context or {})
        if contact_import is not None:
            contact_import = contact_import_sync(contact_import=contact_import)
            extra_context["contact_import"] = contact_import
            extra_context["progress_url"] = self._url("progress", contact_import.pk)
            extra_context["running"] = contact_import.status in (
                ImportStatus.QUEUED,
                ImportStatus.RUNNING,
            )
            if contact_import.status in (ImportStatus.DRAFT, ImportStatus.PREVIEWED):
                extra_context["next_step_url"] = self._url(
                    "mapping" if contact_import.status == ImportStatus.DRAFT else "preview",
                    contact_import.pk,
                )
        return super().change_view(request, object_id, form_url, extra_context)


# --- communications: marketing email, send log, lists, ad audiences, communications ---


class AdAudienceChoiceForm(forms.Form):
    audience = forms.ModelChoiceField(queryset=AdAudience.objects.all(), label="Ad audience")


def membership_message(change: MembershipChange, owner) -> str:
    if change.operation == "add":
        text = (
            f"Added {change.added:,} to “{owner}”; {change.already_member:,} were already members."
        )
        if change.refused_non_marketing:
            text += (
                f" {change.refused_non_marketing:,} non-marketing contacts were refused: "
                "only marketing contacts may be in ad audiences."
            )
        return text
    return f"Removed {change.removed:,} from “{owner}”; {change.not_member:,} were not members."


class MarketingEmailForm(forms.ModelForm):
    class Meta:
        model = MarketingEmail
        fields = ["name", "subject", "body", "from_email", "audience_filter", "audience_list"]
        widgets = {"body": forms.Textarea(attrs={"rows": 14, "cols": 80})}

    def clean_audience_filter(self):
        value = self.cleaned_data.get("audience_filter") or {}
        if not value:
            return {}
        from contacts.filters import contact_filter_params

        try:
            return contact_filter_params(value)
        except ValidationError as error:
            # A dict of errors by filter key: shown on this one field.
            raise ValidationError(
                [f"{key}: {' '.join(messages)}" for key, messages in error.message_dict.items()]
                if hasattr(error, "error_dict")
                else error.messages
            ) from error


@admin.register(MarketingEmail)
class MarketingEmailAdmin(AccountTimeZoneMixin, admin.ModelAdmin):
    """Drafts are edited here; "Preview & send" shows the breakdown and sends on confirm.

    Writes go through contacts.services (create, update, delete of drafts only, send).
    """

    form = MarketingEmailForm
    list_display = [
        "name",
        "subject",
        "status",
        "audience_display",
        "recipient_count",
        "sent_count",
        "failed_count",
        "sent_at",
    ]
    list_filter = ["status"]
    search_fields = ["name", "subject"]
    list_select_related = ["audience_list"]
    autocomplete_fields = ["audience_list"]
    actions = ["release_stale_claims"]
    SEND_FIELDS = [
        "status",
        "send_started_at",
        "sent_at",
        "sent_by",
        "audience_count",
        "recipient_count",
        "excluded_non_marketing",
        "excluded_unsubscribed",
        "excluded_bounced",
        "sent_count",
        "failed_count",
    ]

    @admin.action(
        description="Resend to recipients stuck as “claimed” for over an hour",
        permissions=["send"],
    )
    def release_stale_claims(self, request, queryset):
        released = sum(
            marketing_email_release_stale_claims(email=email, actor=request.user)
            for email in queryset
        )
        self.message_user(
            request,
            f"{released} stuck recipients released; their send resumes."
            if released
            else "No recipient was stuck (claimed over an hour ago and never confirmed).",
        )

    @admin.display(description="Audience")
    def audience_display(self, obj: MarketingEmail) -> str:
        if obj.audience_list_id:
            return f"List “{obj.audience_list}”"
        return "Filter " + ", ".join(f"{k}={v}" for k, v in (obj.audience_filter or {}).items())

    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (None, {"fields": ["name", "subject", "body", "from_email"]}),
            (
                "Audience",
                {
                    "fields": ["audience_filter", "audience_list"],
                    "description": "A contact filter (as the contacts API takes it, e.g. "
                    '{"lifecycle_stage": "lead"}) or a static list. Only marketing contacts '
                    "that are neither unsubscribed nor hard bounced receive it.",
                },
            ),
        ]
        if obj is not None:
            fieldsets.append(("Send", {"fields": self.SEND_FIELDS}))
        return fieldsets

    def get_readonly_fields(self, request, obj=None):
        return self.SEND_FIELDS

    def has_change_permission(self, request, obj=None):
        # Once sending started the email is history: its page is read-only.
        if obj is not None and obj.status != MarketingEmailStatus.DRAFT:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.status != MarketingEmailStatus.DRAFT:
            return False
        return super().has_delete_permission(request, obj)

    def has_send_permission(self, request) -> bool:
        return request.user.has_perm("contacts.send_marketingemail")

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in MarketingEmailForm.Meta.fields}
        if change:
            saved = marketing_email_update(email=MarketingEmail.objects.get(pk=obj.pk), **fields)
        else:
            saved = marketing_email_create(**fields)
        obj.pk = saved.pk
        obj._state.adding = False

    def delete_model(self, request, obj):
        marketing_email_delete(email=obj)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/send/",
                self.admin_site.admin_view(self.send_view),
                name="{}_{}_send".format(*info),
            ),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.pk is not None:
            context["send_url"] = reverse(
                f"{self.admin_site.name}:contacts_marketingemail_send", args=[quote(obj.pk)]
            )
        return super().render_change_form(
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )

    def send_view(self, request, object_id):
        """GET: the breakdown and, for a user who may send, the confirm button. POST: send."""
        email = self.get_object(request, unquote(object_id))
        if email is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        if not self.has_view_permission(request, email):
            raise PermissionDenied
        change_url = reverse(
            f"{self.admin_site.name}:contacts_marketingemail_change", args=[quote(email.pk)]
        )
        if request.method == "POST":
            if not self.has_send_permission(request):
                raise PermissionDenied
            try:
                outcome = marketing_email_send(email=email, actor=request.user)
            except AlreadySent as error:
                self.message_user(request, str(error), messages.WARNING)
                return HttpResponseRedirect(change_url)
            except ValidationError as error:
                self.message_user(request, " ".join(error.messages), messages.ERROR)
                return HttpResponseRedirect(change_url)
            email.refresh_from_db()
            if email.status == MarketingEmailStatus.SENT:
                text = f"“{email}” was sent to {email.sent_count:,} contacts."
                if email.failed_count:
                    text += f" {email.failed_count:,} failed (see the send log)."
            else:
                text = (
                    f"“{email}” is being sent to {outcome.breakdown.will_receive:,} contacts in "
                    "the background."
                )
            self.message_user(request, text, messages.SUCCESS)
            return HttpResponseRedirect(change_url)
        error = None
        breakdown = None
        try:
            breakdown = marketing_send_breakdown(
                contacts=marketing_email_audience(email=email), email=email
            )
        except ValidationError as invalid:
            error = " ".join(invalid.messages)
        with timezone.override(account_time_zone()):
            context = {
                **self.admin_site.each_context(request),
                "title": f"Preview & send “{email}”",
                "subtitle": None,
                "opts": self.opts,
                "original": email,
                "email": email,
                "breakdown": breakdown,
                "error": error,
                "can_send": self.has_send_permission(request)
                and email.status != MarketingEmailStatus.SENT
                and breakdown is not None,
                "change_url": change_url,
            }
            request.current_app = self.admin_site.name
            response = TemplateResponse(request, "admin/contacts/marketingemail/send.html", context)
            response.render()
        return response


@admin.register(EmailSend)
class EmailSendAdmin(ReadOnlyAdminMixin, AccountTimeZoneMixin, BigTableAdmin):
    list_display = ["id", "email", "contact_id", "to_address", "status", "at", "error"]
    list_select_related = ["email"]
    list_filter = ["status", "email"]
    sortable_by = ["id"]
    search_fields = ["=to_address"]
    search_help_text = "An exact email address."


@admin.register(Unsubscription)
class UnsubscriptionAdmin(ReadOnlyAdminMixin, AccountTimeZoneMixin, BigTableAdmin):
    list_display = ["id", "contact_id", "email", "at"]
    list_select_related = ["email"]
    sortable_by = ["id"]


class MembersLinkMixin:
    """A link to the contacts changelist filtered to the members (no inline: lists grow)."""

    member_filter = ""

    @admin.display(description="Members")
    def members_link(self, obj):
        url = reverse("admin:contacts_contact_changelist") + f"?{self.member_filter}={obj.pk}"
        return format_html('<a href="{}">{} members</a>', url, obj.member_count)

    def get_queryset(self, request):
        # One GROUP BY over the membership index for the page's few rows.
        return super().get_queryset(request).annotate(member_count=Count("memberships"))


@admin.register(ContactList)
class ContactListAdmin(MembersLinkMixin, admin.ModelAdmin):
    list_display = ["name", "description", "members_link", "created_at"]
    search_fields = ["name"]
    readonly_fields = ["members_link"]
    fields = ["name", "description", "members_link"]
    member_filter = "contact_list"


@admin.register(AdAudience)
class AdAudienceAdmin(MembersLinkMixin, admin.ModelAdmin):
    list_display = ["name", "platform", "members_link", "created_at"]
    list_filter = ["platform"]
    search_fields = ["name"]
    readonly_fields = ["members_link"]
    fields = ["name", "platform", "members_link"]
    member_filter = "ad_audience"


class CommunicationForm(forms.ModelForm):
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 10, "cols": 80}))

    class Meta:
        model = Communication
        fields = ["contact", "type", "subject"]


@admin.register(Communication)
class CommunicationAdmin(AccountTimeZoneMixin, BigTableAdmin):
    """The log of non-marketing communication. Adding one sends it (to any contact);
    rows never change afterwards."""

    form = CommunicationForm
    list_display = ["at", "type", "to_address", "contact_id", "subject", "status", "actor"]
    list_select_related = ["actor"]
    list_filter = ["type", "status"]
    sortable_by = ["at"]
    search_fields = ["=to_address"]
    search_help_text = "An exact email address."
    raw_id_fields = ["contact"]
    actions = None

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["contact", "type", "subject", "body"]
        return ["type", "to_address", "contact_id", "subject", "status", "error", "at", "actor"]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.get_fields(request, obj)

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        log = communication_send(
            contact=data["contact"],
            type=data["type"],
            subject=data["subject"],
            body=data["body"],
            actor=request.user,
        )
        obj.pk = log.pk
        obj._state.adding = False
        if log.status != EmailSendStatus.SENT:
            self.message_user(request, f"Sending failed: {log.error}", messages.ERROR)


# --- engagement events (issue 5, item 7) --------------------------------------------


@admin.register(EngagementEvent)
class EngagementEventAdmin(ReadOnlyAdminMixin, AccountTimeZoneMixin, BigTableAdmin):
    """Events are written by ingestion only (the API, intake): read-only here."""

    list_display = ["occurred_at", "type", "contact", "external_id", "created_at"]
    list_filter = ["type"]
    list_select_related = ["contact"]
    raw_id_fields = ["contact"]
    # Exact lookups only: the unique external_id index and the unique email index.
    search_fields = ["=external_id", "=contact__email"]
    search_help_text = "An exact external id, or a contact's exact email."
    # The primary key: newest first without sorting the table (occurred_at alone has no index).
    ordering = ["-id"]
    fields = ["contact", "type", "occurred_at", "external_id", "properties", "created_at"]
