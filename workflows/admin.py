"""The workflows admin: workflows with their preview, runs and approvals, scoring rules, the
hygiene wizard and policies, rotation plans, the savings report, and the criteria tester.

The criteria tester is a plain admin page at /admin/workflows/criteria-tester/, for staff
who may view contacts (a tree in, the match count and a sample out); it writes nothing.
Interfaces only: the selection and the writes are workflows' selectors and services (and
contacts.criteria); the money is billing's.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.validators import MaxValueValidator, MinValueValidator
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django_jsonform.forms.fields import JSONFormField

from billing.money import format_money
from billing.selectors import billing_demotion_saving
from contacts.criteria import CriteriaError, criteria_validate
from contacts.criteria.forms import CriteriaForm, CriteriaFormField
from contacts.criteria.selectors import criteria_preview
from contacts.criteria.validation import MAX_YEAR, MIN_YEAR
from contacts.intake.models import ConnectedApp
from contacts.status.rules import MARKETING_STATUS_PERMISSION
from crm.admin import (
    AccountTimeZoneMixin,
    BigTableAdmin,
    OwnsSystemRowsMixin,
    ReadOnlyAdminMixin,
    account_time_zone,
)
from crm.inputs import JSONInputError, JSONInputFormMixin, json_input_loads
from crm.instants import InstantField
from crm.jobs import JobNotQueued, delay, jobs_expire_stale
from workflows.hygiene import hygiene_run
from workflows.models import (
    ACTIONS_JSON_SCHEMA,
    DEFAULT_UNENGAGED_DAYS,
    MAX_UNENGAGED_DAYS,
    Enrollment,
    HygienePolicy,
    HygieneRun,
    HygieneTrigger,
    RotationMember,
    RotationPlan,
    RotationRun,
    RunStatus,
    RunTrigger,
    ScoringRule,
    Workflow,
    WorkflowRun,
    actions_clean,
    actions_from_editor,
)
from workflows.rotation import rotation_tick
from workflows.runs import (
    APPROVE_PERMISSIONS,
    workflow_run_approve,
    workflow_run_reject,
    workflow_run_request,
    workflow_run_resume,
)
from workflows.selectors import (
    hygiene_preview,
    marketing_definition,
    rotation_billable_members,
    savings_report,
)
from workflows.services import (
    WorkflowError,
    workflow_from_two_way_sync,
    workflow_preview,
)
from workflows.tasks import recompute_scores


class CriteriaTesterForm(CriteriaForm):
    raw = forms.CharField(
        label="…or paste a tree as JSON",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80, "spellcheck": "false"}),
        help_text='HubSpot\'s shape, e.g. {"filterGroups": [{"filters": [{"propertyName": '
        '"lifecyclestage", "operator": "EQ", "value": "lead"}]}]}. Overrides the editor.',
    )
    now = InstantField(
        label="As of",
        required=False,
        help_text="Day windows count back from this instant (default: now).",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["criteria"].required = False

    def clean_now(self):
        now = self.cleaned_data.get("now")
        if now is not None and not MIN_YEAR <= now.year <= MAX_YEAR:
            raise forms.ValidationError(f"Give an instant in the years {MIN_YEAR} to {MAX_YEAR}.")
        return now

    def clean(self):
        cleaned = super().clean()
        raw = (cleaned.get("raw") or "").strip()
        if raw:
            self.errors.pop("criteria", None)
            try:
                tree = json_input_loads(raw)
            except JSONInputError as exc:
                self.add_error("raw", str(exc))
                return cleaned
            except ValueError as exc:
                self.add_error("raw", f"Not JSON: {exc}")
                return cleaned
            try:
                criteria_validate(tree)
            except CriteriaError as exc:
                self.add_error("raw", exc.as_validation_error())
                return cleaned
            cleaned["criteria"] = tree
        elif cleaned.get("criteria") is None and "criteria" not in self.errors:
            self.add_error("criteria", "Build a tree in the editor or paste one as JSON.")
        return cleaned


def criteria_tester_view(request):
    if not request.user.has_perm("contacts.view_contact"):
        raise PermissionDenied
    preview = None
    form = CriteriaTesterForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        now = form.cleaned_data.get("now") or timezone.now()
        tree = form.cleaned_data["criteria"]
        preview = {
            "result": criteria_preview(tree=tree, now=now),
            "now": now,
            "canonical": json.dumps(criteria_validate(tree).as_json(), indent=2),
        }
    context = {
        **admin.site.each_context(request),
        "title": "Criteria tester",
        "form": form,
        "preview": preview,
    }
    return TemplateResponse(request, "admin/workflows/criteria_tester.html", context)


# Included by crm/urls.py ahead of admin.site.urls (a page of its own, with no model).
admin_urls = [
    path(
        "workflows/criteria-tester/",
        admin.site.admin_view(criteria_tester_view),
        name="workflows_criteria_tester",
    ),
]


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
                with timezone.override(account_time_zone()):
                    when = (
                        date_format(timezone.localtime(run.effective_from), "j F Y")
                        if run.effective_from
                        else "the next update date"
                    )
                messages.success(
                    request,
                    ("Already done (a second submit changes nothing): " if again else "")
                    + f"{run.scheduled} contacts are non-marketing from {when}; "
                    f"saving {_money(run.saving, run.currency)} a month from then.",
                )
                url = reverse("admin:contacts_contact_changelist") + "?marketing=pending"
                return HttpResponseRedirect(url)
        with timezone.override(account_time_zone()):
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
    with timezone.override(account_time_zone()):
        return TemplateResponse(request, "admin/workflows/hygiene_wizard.html", context).render()


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
                "url": contacts + "?" + urlencode({"marketing": "settled", **filters[name]}),
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
        "pending_url": reverse("admin:contacts_contact_changelist") + "?marketing=pending",
    }
    with timezone.override(account_time_zone()):
        return TemplateResponse(request, "admin/workflows/savings.html", context).render()


admin_urls += [
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
class HygienePolicyAdmin(StatusChangingAdminMixin, AccountTimeZoneMixin, admin.ModelAdmin):
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
                (obj.include_unengaged, f"unengaged {obj.unengaged_days} d"),
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
            date_format(timezone.localtime(run.at), "j M Y H:i"),
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
                f"{policy}: {run.scheduled} contacts scheduled non-marketing, saving "
                f"{_money(run.saving, run.currency)} a month.",
                messages.SUCCESS,
            )

    def changelist_view(self, request, extra_context=None):
        extra = {"hygiene_wizard_url": reverse("workflows_hygiene_wizard")}
        return super().changelist_view(request, {**(extra_context or {}), **extra})


@admin.register(HygieneRun)
class HygieneRunAdmin(ReadOnlyAdminMixin, AccountTimeZoneMixin, admin.ModelAdmin):
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
class RotationPlanAdmin(
    OwnsSystemRowsMixin, StatusChangingAdminMixin, AccountTimeZoneMixin, admin.ModelAdmin
):
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
        return f"{rotation_billable_members(obj, at=timezone.now()).count()} / {obj.size}"

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
                    f"promoted {outcome.promote.promoted} ({outcome.promote.get_status_display()})"
                )
            if outcome.demote is not None:
                parts.append(f"demoting {outcome.demote.demoted} at the update date")
            self.message_user(request, f"{plan}: " + (", ".join(parts) or "nothing due"))


@admin.register(RotationRun)
class RotationRunAdmin(ReadOnlyAdminMixin, AccountTimeZoneMixin, admin.ModelAdmin):
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
class RotationMemberAdmin(ReadOnlyAdminMixin, AccountTimeZoneMixin, admin.ModelAdmin):
    list_display = ["id", "plan", "contact", "joined_at", "leaving_at", "left_at"]
    list_filter = ["plan"]
    list_select_related = ["plan", "contact"]
    raw_id_fields = ["contact"]


@admin.register(ScoringRule)
class ScoringRuleAdmin(admin.ModelAdmin):
    """Marketing ops edit the rules; the changelist's "Recompute scores" button rebuilds
    every lead score from the events (the daily task, run now)."""

    list_display = [
        "__str__",
        "event_type",
        "points",
        "window_days",
        "half_life_days",
        "enabled",
        "updated_at",
    ]
    list_filter = ["event_type", "enabled"]
    list_editable = ["enabled"]
    fieldsets = [
        (None, {"fields": ["name", "event_type", "points", "enabled"]}),
        (
            "Time",
            {
                "fields": ["window_days", "half_life_days"],
                "description": (
                    "At most one: a window counts only the last N days' events; a half-life "
                    "halves an event's points every N days. Scores follow new events at once; "
                    "windows and decay are brought up to date by the daily recompute."
                ),
            },
        ),
    ]

    def get_urls(self):
        return [
            path(
                "recompute/",
                self.admin_site.admin_view(self.recompute_view),
                name="workflows_scoringrule_recompute",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_recompute": self.has_change_permission(request),
        }
        return super().changelist_view(request, extra_context)

    def recompute_view(self, request):
        if not self.has_change_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            queued = delay(recompute_scores, what="The lead-score recompute")
        except JobNotQueued as error:
            self.message_user(request, str(error), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:workflows_scoringrule_changelist"))
        if queued.ready():  # tasks run in-process (no broker)
            result = queued.get()
            if not result["rules"]:
                message = "No enabled scoring rule: scoring is off, no score was touched."
            else:
                message = (
                    f"Lead scores recomputed: {result['changed']:,} changed "
                    f"({result['rules']} rules, {result['seconds']:.1f} s)."
                )
        else:
            message = "Lead scores are being recomputed in the background."
        self.message_user(request, message, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:workflows_scoringrule_changelist"))


RUN_PERMISSION = "workflows.run_workflow"
RECENT_RUNS = 10


class ActionsFormField(JSONInputFormMixin, JSONFormField):
    """The actions editor (django-jsonform); `actions_clean` validates, not the widget's own
    validator (which wants every optional key present). Inputs the chosen action does not
    use are dropped first (`actions_from_editor`)."""

    def to_python(self, value):
        return actions_from_editor(super().to_python(value))

    def validate(self, value):
        forms.Field.validate(self, value)
        if value in self.empty_values:
            return
        actions_clean(value)

    def clean(self, value):
        value = super().clean(value)
        return actions_clean(value) if value else []


class WorkflowAdminForm(forms.ModelForm):
    criteria = CriteriaFormField(label="Enrollment criteria")
    actions = ActionsFormField(
        schema=ACTIONS_JSON_SCHEMA,
        required=False,
        help_text="Run in this order over the contacts that newly meet the criteria. "
        "Marketing email and ad audiences go through the send guard (marketing contacts only).",
    )

    class Meta:
        model = Workflow
        fields = [
            "name",
            "description",
            "enabled",
            "purpose",
            "criteria",
            "actions",
            "re_enrollment",
            "event_triggered",
            "schedule_minutes",
            "max_new_marketing",
        ]

    def clean_actions(self):
        return self.cleaned_data.get("actions") or []


def _recent_runs_table(workflow: Workflow) -> str:
    runs = workflow.runs.order_by("-id")[:RECENT_RUNS]
    rows = format_html_join(
        "",
        "<tr><td><a href='{}'>#{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                reverse("admin:workflows_workflowrun_change", args=[run.pk]),
                run.pk,
                run.get_trigger_display(),
                run.get_status_display(),
                run.matched,
                run.enrolled,
                run.changed,
                run.refused,
                run.duration or "—",
                run.hold_reason or run.error or "",
            )
            for run in runs
        ),
    )
    if not rows:
        return "No run yet."
    return format_html(
        "<table><thead><tr><th>Run</th><th>Trigger</th><th>Status</th><th>Matched</th>"
        "<th>Enrolled</th><th>Changed</th><th>Refused</th><th>Duration</th><th>Note</th></tr>"
        "</thead><tbody>{}</tbody></table>",
        rows,
    )


@admin.register(Workflow)
class WorkflowAdmin(OwnsSystemRowsMixin, admin.ModelAdmin):
    form = WorkflowAdminForm
    change_form_template = "admin/workflows/workflow/change_form.html"
    change_list_template = "admin/workflows/workflow/change_list.html"
    list_display = [
        "name",
        "purpose",
        "enabled",
        "event_triggered",
        "schedule_minutes",
        "re_enrollment",
        "last_run_at",
    ]
    list_filter = ["enabled", "purpose", "event_triggered"]
    search_fields = ["name"]
    readonly_fields = ["last_run_at", "created_by", "recent_runs"]

    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (None, {"fields": ["name", "description", "enabled", "purpose"]}),
            ("Who", {"fields": ["criteria"]}),
            ("What", {"fields": ["actions"]}),
            (
                "When",
                {
                    "fields": [
                        "event_triggered",
                        "schedule_minutes",
                        "re_enrollment",
                        "max_new_marketing",
                    ]
                },
            ),
        ]
        if obj is not None:
            fieldsets.append(("Runs", {"fields": ["recent_runs", "last_run_at", "created_by"]}))
        return fieldsets

    @admin.display(description="Recent runs")
    def recent_runs(self, obj):
        return _recent_runs_table(obj)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        obj.save()  # the form ran full_clean (criteria_validate and the actions' schema)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/preview/", view(self.preview_view), name="workflows_workflow_preview"),
            path("<int:pk>/run/", view(self.run_view), name="workflows_workflow_run"),
            path(
                "definition/",
                view(self.definition_view),
                name="workflows_marketing_definition",
            ),
            path(
                "from-two-way-sync/",
                view(self.template_view),
                name="workflows_workflow_from_two_way_sync",
            ),
            *super().get_urls(),
        ]

    def _context(self, request, **extra):
        return {**self.admin_site.each_context(request), "opts": self.model._meta, **extra}

    def preview_view(self, request, pk):
        workflow = get_object_or_404(Workflow, pk=pk)
        if not (
            self.has_view_permission(request, workflow) and request.user.has_perm(RUN_PERMISSION)
        ):
            raise PermissionDenied
        preview = workflow_preview(workflow=workflow)
        return TemplateResponse(
            request,
            "admin/workflows/workflow/preview.html",
            self._context(
                request, title=f"Preview of “{workflow}”", workflow=workflow, preview=preview
            ),
        )

    def run_view(self, request, pk):
        workflow = get_object_or_404(Workflow, pk=pk)
        if not request.user.has_perm(RUN_PERMISSION):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:workflows_workflow_preview", args=[pk]))
        try:
            run = workflow_run_request(
                workflow=workflow,
                trigger=RunTrigger.MANUAL,
                actor=request.user,
                idempotency_key=request.POST.get("run_key") or None,
            )
        except JobNotQueued as error:  # the run is recorded, failed with the reason
            messages.error(request, str(error))
            return HttpResponseRedirect(reverse("admin:workflows_workflowrun_changelist"))
        self.log_change(request, workflow, f"Run #{run.pk} requested.")
        run.refresh_from_db()
        messages.info(request, f"Run #{run.pk}: {run.get_status_display().lower()}.")
        return HttpResponseRedirect(reverse("admin:workflows_workflowrun_change", args=[run.pk]))

    def definition_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        definition = marketing_definition(now=timezone.now())
        return TemplateResponse(
            request,
            "admin/workflows/workflow/definition.html",
            self._context(request, title="Marketing contact definition", definition=definition),
        )

    def template_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            app = get_object_or_404(ConnectedApp, pk=request.POST.get("app"), two_way_sync=True)
            try:
                workflow = workflow_from_two_way_sync(app=app, actor=request.user)
            except WorkflowError as error:
                messages.error(request, str(error))
            else:
                self.log_addition(request, workflow, "From the two-way sync template.")
                messages.success(
                    request,
                    f"“{workflow}” created, disabled: add the app's filters, then enable it.",
                )
                return HttpResponseRedirect(
                    reverse("admin:workflows_workflow_change", args=[workflow.pk])
                )
        apps = ConnectedApp.objects.filter(two_way_sync=True).order_by("name")
        return TemplateResponse(
            request,
            "admin/workflows/workflow/from_two_way_sync.html",
            self._context(request, title="New workflow from a two-way sync app", apps=apps),
        )


@admin.register(WorkflowRun)
class WorkflowRunAdmin(ReadOnlyAdminMixin, BigTableAdmin):
    list_display = [
        "id",
        "workflow",
        "trigger",
        "status",
        "matched",
        "enrolled",
        "changed",
        "refused",
        "would_become_marketing",
        "created_at",
        "duration",
    ]
    list_filter = ["status", "trigger"]
    list_select_related = ["workflow"]
    raw_id_fields = ["workflow"]
    change_form_template = "admin/workflows/workflowrun/change_form.html"
    actions = ["approve_runs", "reject_runs"]

    def get_actions(self, request):
        # ReadOnlyAdminMixin turns actions off; approving held runs is the one exception.
        actions = admin.ModelAdmin.get_actions(self, request)
        actions.pop("delete_selected", None)
        return actions

    def has_approve_permission(self, request):
        return any(request.user.has_perm(p) for p in APPROVE_PERMISSIONS)

    @admin.action(description="Approve the selected held runs (they run)", permissions=["approve"])
    def approve_runs(self, request, queryset):
        self._decide(request, queryset, workflow_run_approve, "approved")

    @admin.action(description="Reject the selected held runs", permissions=["approve"])
    def reject_runs(self, request, queryset):
        self._decide(request, queryset, workflow_run_reject, "rejected")

    def _decide(self, request, queryset, service, verb):
        for run in queryset.filter(status=RunStatus.HELD):
            try:
                service(run=run, user=request.user)
            except (WorkflowError, JobNotQueued) as error:
                messages.error(request, f"Run #{run.pk}: {error}")
                continue
            self.log_change(request, run, f"Held run {verb}.")
            messages.success(request, f"Run #{run.pk} {verb}.")

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/decide/", view(self.decide_view), name="workflows_workflowrun_decide"),
            path("<int:pk>/resume/", view(self.resume_view), name="workflows_workflowrun_resume"),
            *super().get_urls(),
        ]

    def resume_view(self, request, pk):
        """POST: queue a failed run again; it goes on from its cursor."""
        run = get_object_or_404(WorkflowRun, pk=pk)
        if request.method != "POST" or not request.user.has_perm(RUN_PERMISSION):
            raise PermissionDenied
        try:
            workflow_run_resume(run=run)
        except (WorkflowError, JobNotQueued) as error:
            messages.error(request, str(error))
        else:
            self.log_change(request, run, "Failed run resumed.")
            messages.success(
                request, f"Run #{run.pk} is queued again: it goes on where it stopped."
            )
        return HttpResponseRedirect(reverse("admin:workflows_workflowrun_change", args=[run.pk]))

    def changelist_view(self, request, extra_context=None):
        jobs_expire_stale(model=WorkflowRun)  # running runs whose worker died
        return super().changelist_view(request, extra_context)

    def decide_view(self, request, pk):
        run = get_object_or_404(WorkflowRun, pk=pk)
        if request.method != "POST" or not self.has_approve_permission(request):
            raise PermissionDenied
        if request.POST.get("decision") == "approve":
            self._decide(
                request, WorkflowRun.objects.filter(pk=pk), workflow_run_approve, "approved"
            )
        else:
            self._decide(
                request, WorkflowRun.objects.filter(pk=pk), workflow_run_reject, "rejected"
            )
        return HttpResponseRedirect(reverse("admin:workflows_workflowrun_change", args=[run.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if str(object_id).isdigit():
            jobs_expire_stale(model=WorkflowRun, pk=int(object_id))  # its worker died?
        extra_context = {
            **(extra_context or {}),
            "can_decide": self.has_approve_permission(request),
            "can_resume": request.user.has_perm(RUN_PERMISSION),
        }
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(Enrollment)
class EnrollmentAdmin(ReadOnlyAdminMixin, BigTableAdmin):
    list_display = [
        "id",
        "workflow",
        "contact",
        "enrolled_at",
        "last_matched_at",
        "exited_at",
        "times",
    ]
    list_filter = ["workflow"]
    list_select_related = ["workflow", "contact"]
    raw_id_fields = ["workflow", "contact", "run"]
    search_fields = ["contact__email"]  # the contacts' unique email index
