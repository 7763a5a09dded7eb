"""The hygiene and rotation admin: the hygiene wizard (/admin/workflows/hygiene/: options →
confirmation with the count and the saving → scheduled), the savings report
(/admin/workflows/savings/), and the admins of hygiene policies, rotation plans and their
read-only runs and members. The money is billing's (format_money, billing_demotion_saving).
"""

from __future__ import annotations

import uuid
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.validators import MaxValueValidator, MinValueValidator
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html

from billing.money import format_money
from billing.selectors import billing_demotion_saving
from contacts.criteria.forms import CriteriaFormField
from contacts.status.rules import MARKETING_STATUS_PERMISSION
from crm.admin import (
    OwnsSystemRowsMixin,
    ReadOnlyAdminMixin,
)
from crm.text import counted
from workflows.hygiene import hygiene_run
from workflows.models import (
    DEFAULT_UNENGAGED_DAYS,
    MAX_UNENGAGED_DAYS,
    HygienePolicy,
    HygieneRun,
    HygieneTrigger,
    RotationMember,
    RotationPlan,
    RotationRun,
)
from workflows.rotation import rotation_tick
from workflows.selectors import (
    hygiene_preview,
    rotation_billable_members,
    savings_report,
)

# The hygiene wizard (/admin/workflows/hygiene/: options → confirmation with the count
# and the saving → scheduled), the savings report (/admin/workflows/savings/), and the
# admins of policies, rotation plans and their read-only runs. The money is billing's
# (format_money, billing_demotion_saving).


REASON_LABELS = {
    "unsubscribed": "Unsubscribed",
    "hard_bounced": "Hard bounced",
    "unengaged": "Unengaged",
    "criteria": "Extra criteria",
}


def _money(amount, currency) -> str:
    return "—" if amount is None else format_money(amount, currency or "USD")


def _can_run_hygiene(user) -> bool:
    return user.has_perms(["workflows.add_hygienerun", MARKETING_STATUS_PERMISSION])


class HygieneWizardForm(forms.Form):
    include_unsubscribed = forms.BooleanField(
        required=False, initial=True, label="Unsubscribed contacts"
    )
    include_hard_bounced = forms.BooleanField(
        required=False, initial=True, label="Hard-bounced contacts"
    )
    include_unengaged = forms.BooleanField(required=False, label="Unengaged contacts")
    unengaged_days = forms.IntegerField(
        initial=DEFAULT_UNENGAGED_DAYS,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_UNENGAGED_DAYS)],
        label="…with no engagement for (days)",
        help_text="Never engaged counts as unengaged; contacts created within these days are left alone.",
    )
    criteria = CriteriaFormField(label="Any other contacts (criteria)", required=False)

    def clean(self):
        cleaned = super().clean()
        cleaned["criteria"] = cleaned.get("criteria") or {"filterGroups": []}
        return cleaned

    def options(self) -> dict:
        return {key: self.cleaned_data[key] for key in self.fields}


class HygieneConfirmForm(forms.Form):
    step = forms.CharField(widget=forms.HiddenInput, initial="confirm")
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=100)


def hygiene_wizard_view(request):
    """Step 1: what to clean up. Step 2: how many, the saving, the date; confirm schedules."""
    if not _can_run_hygiene(request.user):
        raise PermissionDenied
    now = timezone.now()
    form = HygieneWizardForm(request.POST or None)
    policy_id = request.GET.get("policy")
    if request.method == "GET" and policy_id and policy_id.isdigit():
        policy = HygienePolicy.objects.filter(pk=int(policy_id)).first()
        if policy is not None:
            form = HygieneWizardForm(initial=policy.options())
    preview = confirm_form = None
    if request.method == "POST" and form.is_valid():
        options = form.options()
        if request.POST.get("step") == "confirm":
            confirm = HygieneConfirmForm(request.POST)
            if confirm.is_valid():
                key = "wizard:" + confirm.cleaned_data["idempotency_key"]
                again = HygieneRun.objects.filter(idempotency_key=key).exists()
                run = hygiene_run(
                    options=options,
                    idempotency_key=key,
                    trigger=HygieneTrigger.WIZARD,
                    actor=request.user,
                )
                when = (
                    date_format(timezone.localtime(run.effective_from))
                    if run.effective_from
                    else "the next update date"
                )
                messages.success(
                    request,
                    ("Already done (a second submit changes nothing): " if again else "")
                    + f"{counted(run.scheduled, 'contact')} non-marketing from {when}; "
                    f"saving {_money(run.saving, run.currency)} a month from then.",
                )
                url = reverse("admin:contacts_contact_changelist") + "?pending=true"
                return HttpResponseRedirect(url)
        preview = hygiene_preview(options=options, now=now)
        preview_sample = list(preview.sample)
        confirm_form = HygieneConfirmForm(initial={"idempotency_key": uuid.uuid4().hex})
    context = {
        **admin.site.each_context(request),
        "title": "Clean up marketing contacts" if preview is None else "Confirm the clean-up",
        "form": form,
        "preview": preview,
        "sample": preview_sample if preview else [],
        "reasons": [
            (REASON_LABELS[name], count)
            for name, count in (preview.by_reason if preview else {}).items()
        ],
        "saving": _money(preview.saving, preview.currency) if preview else None,
        "confirm_form": confirm_form,
        "opts": HygieneRun._meta,
    }
    return TemplateResponse(request, "admin/workflows/hygiene_wizard.html", context)


def savings_view(request):
    """The savings report: settled marketing contacts that cannot be marketed to or are
    unengaged, with links into the contacts list and what demoting them saves."""
    if not request.user.has_perm("workflows.view_savings"):
        raise PermissionDenied
    raw = request.GET.get("unengaged_days") or str(DEFAULT_UNENGAGED_DAYS)
    days = int(raw) if raw.isdigit() and 1 <= int(raw) <= MAX_UNENGAGED_DAYS else None
    error = None if days else "unengaged_days: a whole number of days from 1 to 3650."
    report = rows = None
    if days:
        report = savings_report(
            now=timezone.now(), unengaged_days=days, price=billing_demotion_saving
        )
        contacts = reverse("admin:contacts_contact_changelist")
        filters = {
            "unsubscribed": {"unsubscribed__exact": "1"},
            "hard_bounced": {"hard_bounced__exact": "1"},
            "unengaged": {"unengaged": str(days)},
        }
        rows = [
            {
                "label": REASON_LABELS[name],
                "count": data["count"],
                "once": data["once"],
                "saving": _money(data["saving"], report.currency),
                "url": contacts
                + "?"
                + urlencode({"marketing_status": "marketing", "pending": "false", **filters[name]}),
            }
            for name, data in report.reasons.items()
        ]
    context = {
        **admin.site.each_context(request),
        "title": "Savings report",
        "report": report,
        "rows": rows,
        "total_saving": _money(report.saving, report.currency) if report else None,
        "days": days or raw,
        "error": error,
        "can_clean_up": _can_run_hygiene(request.user),
        "pending_url": reverse("admin:contacts_contact_changelist") + "?pending=true",
    }
    return TemplateResponse(request, "admin/workflows/savings.html", context)


hygiene_admin_urls = [
    path(
        "workflows/hygiene/",
        admin.site.admin_view(hygiene_wizard_view),
        name="workflows_hygiene_wizard",
    ),
    path("workflows/savings/", admin.site.admin_view(savings_view), name="workflows_savings"),
]


class StatusChangingAdminMixin:
    """Policies and plans change marketing statuses on their own: editing them needs
    contacts.change_marketing_status besides the model permission."""

    def has_add_permission(self, request):
        return super().has_add_permission(request) and request.user.has_perm(
            MARKETING_STATUS_PERMISSION
        )

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and request.user.has_perm(
            MARKETING_STATUS_PERMISSION
        )


class HygienePolicyForm(forms.ModelForm):
    criteria = CriteriaFormField(label="Any other contacts (criteria)", required=False)

    class Meta:
        model = HygienePolicy
        fields = [
            "name",
            "enabled",
            "include_unsubscribed",
            "include_hard_bounced",
            "include_unengaged",
            "unengaged_days",
            "criteria",
            "schedule",
            "days_before_update",
            "interval_days",
        ]

    def clean_criteria(self):
        return self.cleaned_data.get("criteria") or {"filterGroups": []}


@admin.register(HygienePolicy)
class HygienePolicyAdmin(StatusChangingAdminMixin, admin.ModelAdmin):
    form = HygienePolicyForm
    list_display = ["name", "enabled", "schedule", "reasons_display", "last_run_display"]
    list_filter = ["enabled", "schedule"]
    search_fields = ["name"]
    actions = ["run_now_action"]
    fieldsets = [
        (None, {"fields": ["name", "enabled"]}),
        (
            "Which marketing contacts (any of)",
            {
                "fields": [
                    "include_unsubscribed",
                    "include_hard_bounced",
                    "include_unengaged",
                    "unengaged_days",
                    "criteria",
                ],
                "description": "Only marketing contacts without a pending change are scheduled, "
                "non-marketing from the next update date.",
            },
        ),
        ("Schedule", {"fields": ["schedule", "days_before_update", "interval_days"]}),
    ]

    @admin.display(description="Reasons")
    def reasons_display(self, obj):
        parts = [
            label
            for flag, label in (
                (obj.include_unsubscribed, "unsubscribed"),
                (obj.include_hard_bounced, "hard bounced"),
                (obj.include_unengaged, f"unengaged for {counted(obj.unengaged_days, 'day')}"),
                (bool((obj.criteria or {}).get("filterGroups")), "criteria"),
            )
            if flag
        ]
        return ", ".join(parts) or "—"

    @admin.display(description="Last run")
    def last_run_display(self, obj):
        run = obj.runs.order_by("-id").first()
        if run is None:
            return "—"
        url = reverse("admin:workflows_hygienerun_change", args=[run.pk])
        return format_html(
            '<a href="{}">{}: {} scheduled</a>',
            url,
            date_format(timezone.localtime(run.at), "DATETIME_FORMAT"),
            run.scheduled,
        )

    def has_run_hygiene_permission(self, request) -> bool:
        return _can_run_hygiene(request.user)

    # Offered only to those who may run it (the wizard's permissions).
    @admin.action(
        description="Run now (schedule the matches non-marketing)", permissions=["run_hygiene"]
    )
    def run_now_action(self, request, queryset):
        for policy in queryset.order_by("pk"):
            run = hygiene_run(
                options=policy.options(),
                idempotency_key=f"manual:{policy.pk}:{uuid.uuid4().hex}",
                trigger=HygieneTrigger.MANUAL,
                policy=policy,
                actor=request.user,
            )
            self.message_user(
                request,
                f"{policy}: {counted(run.scheduled, 'contact')} scheduled non-marketing, saving "
                f"{_money(run.saving, run.currency)} a month.",
                messages.SUCCESS,
            )

    def changelist_view(self, request, extra_context=None):
        extra = {"hygiene_wizard_url": reverse("workflows_hygiene_wizard")}
        return super().changelist_view(request, {**(extra_context or {}), **extra})


@admin.register(HygieneRun)
class HygieneRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "name",
        "trigger",
        "at",
        "matched",
        "scheduled",
        "saving_display",
        "effective_from",
        "actor",
    ]
    list_filter = ["trigger", "policy"]
    list_select_related = ["actor", "policy"]
    readonly_fields = [
        "policy",
        "name",
        "trigger",
        "idempotency_key",
        "options",
        "at",
        "matched",
        "scheduled",
        "breakdown",
        "saving_display",
        "effective_from",
        "actor",
    ]
    exclude = ["saving", "currency"]

    @admin.display(description="Saving a month")
    def saving_display(self, obj):
        return _money(obj.saving, obj.currency)


class RotationPlanForm(forms.ModelForm):
    criteria = CriteriaFormField(label="Pool (criteria)")

    class Meta:
        model = RotationPlan
        fields = [
            "name",
            "criteria",
            "size",
            "rotate_per_period",
            "ranking",
            "lead_days",
            "enabled",
        ]

    def clean(self):
        cleaned = super().clean()
        size, rotate = cleaned.get("size"), cleaned.get("rotate_per_period")
        if size and rotate and rotate > size:
            self.add_error("rotate_per_period", "Rotate at most the plan's size (K) per period.")
        return cleaned


class RotationRunInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = RotationRun
    fields = [
        "step",
        "boundary",
        "status",
        "at",
        "members_before",
        "demoted",
        "promoted",
        "members_after",
        "message",
    ]
    readonly_fields = fields
    ordering = ["-id"]
    extra = 0
    max_num = 0
    show_change_link = True


@admin.register(RotationPlan)
class RotationPlanAdmin(OwnsSystemRowsMixin, StatusChangingAdminMixin, admin.ModelAdmin):
    form = RotationPlanForm
    list_display = [
        "name",
        "enabled",
        "size",
        "rotate_per_period",
        "ranking",
        "lead_days",
        "members_display",
    ]
    list_filter = ["enabled", "ranking"]
    search_fields = ["name"]
    inlines = [RotationRunInline]
    actions = ["run_now_action"]

    @admin.display(description="Billable members now")
    def members_display(self, obj):
        return f"{rotation_billable_members(obj, at=timezone.now()).count():,} of {obj.size:,}"

    # Offered only to those who may change plans (which needs the status permission too).
    @admin.action(
        description="Run the due steps now (promote after the rollover, demote before the "
        "update date)",
        permissions=["change"],
    )
    def run_now_action(self, request, queryset):
        for plan in queryset.order_by("pk"):
            outcome = rotation_tick(plan=plan)
            parts = []
            if outcome.promote is not None:
                parts.append(
                    f"promoted {outcome.promote.promoted:,} ({outcome.promote.get_status_display()})"
                )
            if outcome.demote is not None:
                parts.append(f"demoting {outcome.demote.demoted:,} at the update date")
            self.message_user(request, f"{plan}: " + (", ".join(parts) or "nothing due"))


@admin.register(RotationRun)
class RotationRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "plan",
        "step",
        "boundary",
        "status",
        "at",
        "members_before",
        "demoted",
        "promoted",
        "members_after",
    ]
    list_filter = ["step", "status", "plan"]
    list_select_related = ["plan"]
    exclude = ["candidate_ids"]


@admin.register(RotationMember)
class RotationMemberAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "plan", "contact", "joined_at", "leaving_at", "left_at"]
    list_filter = ["plan"]
    list_select_related = ["plan", "contact"]
    raw_id_fields = ["contact"]
