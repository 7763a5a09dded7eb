"""Intake channels in the admin: forms, submissions, chatflows, connected apps, ad accounts."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from contacts.intake.models import (
    AdAccount,
    AdLead,
    Chatflow,
    ConnectedApp,
    Form,
    FormSubmission,
)
from contacts.intake.services import (
    ad_account_create,
    ad_account_save,
    chatflow_save,
    connected_app_create,
    connected_app_update,
    form_creates_marketing,
    form_save,
    intake_token_issue,
)
from contacts.models import (
    Source,
)
from crm.admin import (
    BigTableAdmin,
    ReadOnlyAdminMixin,
)

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
class FormSubmissionAdmin(ReadOnlyAdminMixin, BigTableAdmin):
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

    from contacts.intake.selectors import (
        CHANNEL_RATE_DAYS,
        channel_marketing_forecast,
    )

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
                "end": date_format(timezone.localtime(forecast.period_end)),
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
        connected_app_update(
            app=obj,
            name=obj.name,
            two_way_sync=obj.two_way_sync,
            is_active=obj.is_active,
            marketing=obj.marketing,
        )


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
class AdLeadAdmin(ReadOnlyAdminMixin, BigTableAdmin):
    list_display = ["id", "ad_account", "lead_id", "contact", "created_contact", "received_at"]
    list_select_related = ["ad_account", "contact"]
    list_filter = ["ad_account", "created_contact"]
    sortable_by = ["id"]
    search_fields = ["=lead_id"]
    search_help_text = "An exact platform lead id."
