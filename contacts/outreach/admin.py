"""Outreach in the admin: marketing email with preview and send, send log, lists, audiences."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count
from django.http import (
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from contacts.outreach.models import (
    AdAudience,
    Communication,
    ContactList,
    EmailSend,
    EmailSendStatus,
    MarketingEmail,
    MarketingEmailStatus,
    Unsubscription,
)
from contacts.outreach.selectors import (
    marketing_email_audience,
    marketing_send_breakdown,
)
from contacts.outreach.services import (
    AlreadySent,
    MembershipChange,
    communication_send,
    marketing_email_create,
    marketing_email_delete,
    marketing_email_release_stale_claims,
    marketing_email_send,
    marketing_email_update,
)
from crm.admin import (
    BigTableAdmin,
    ReadOnlyAdminMixin,
)
from crm.jobs import JobNotQueued
from crm.text import counted


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
class MarketingEmailAdmin(admin.ModelAdmin):
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
            f"{counted(released, 'stuck recipient')} released; their send resumes."
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
            except JobNotQueued as error:  # the email is "sending": sending again resumes it
                self.message_user(request, str(error), messages.ERROR)
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
        return TemplateResponse(request, "admin/contacts/marketingemail/send.html", context)


@admin.register(EmailSend)
class EmailSendAdmin(ReadOnlyAdminMixin, BigTableAdmin):
    list_display = ["id", "email", "contact_id", "to_address", "status", "at", "error"]
    list_select_related = ["email"]
    list_filter = ["status", "email"]
    sortable_by = ["id"]
    search_fields = ["=to_address"]
    search_help_text = "An exact email address."


@admin.register(Unsubscription)
class UnsubscriptionAdmin(ReadOnlyAdminMixin, BigTableAdmin):
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
class CommunicationAdmin(BigTableAdmin):
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
