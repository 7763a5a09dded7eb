"""The workflows admin: workflows with their preview, runs and approvals, scoring rules and
the criteria tester (the hygiene wizard, policies and rotation plans are admin_hygiene's).

The criteria tester is a plain admin page at /admin/workflows/criteria-tester/, for staff
who may view contacts (a tree in, the match count and a sample out); it writes nothing.
Interfaces only: the selection and the writes are workflows' selectors and services (and
contacts.criteria); the money is billing's.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django_jsonform.forms.fields import JSONFormField

from contacts.criteria import CriteriaError, criteria_validate
from contacts.criteria.forms import CriteriaForm, CriteriaFormField
from contacts.criteria.selectors import criteria_preview
from contacts.criteria.validation import MAX_YEAR, MIN_YEAR
from contacts.intake.models import ConnectedApp
from crm.admin import (
    BigTableAdmin,
    OwnsSystemRowsMixin,
    ReadOnlyAdminMixin,
)
from crm.inputs import JSONInputError, JSONInputFormMixin, json_input_loads
from crm.instants import InstantField
from crm.jobs import JobNotQueued, delay, jobs_expire_stale
from workflows.admin_hygiene import hygiene_admin_urls
from workflows.models import (
    ACTIONS_JSON_SCHEMA,
    ActionType,
    Enrollment,
    RunStatus,
    RunTrigger,
    ScoringRule,
    Workflow,
    WorkflowRun,
    actions_clean,
    actions_from_editor,
    status_actions_refusal,
)
from workflows.runs import (
    APPROVE_PERMISSIONS,
    workflow_run_approve,
    workflow_run_reject,
    workflow_run_request,
    workflow_run_resume,
)
from workflows.selectors import (
    marketing_definition,
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


def _tester_workflow(request) -> Workflow | None:
    """The workflow named by `?workflow=<id>` (the link beside a workflow's criteria
    editor), whose criteria the tester opens with; reading them needs the workflow's view
    permission."""
    raw = request.GET.get("workflow")
    if raw is None:
        return None
    if not request.user.has_perm("workflows.view_workflow"):
        raise PermissionDenied
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise Http404("No workflow with that id.")
    return get_object_or_404(Workflow, pk=int(raw))


def criteria_tester_url(workflow: Workflow | None = None) -> str:
    """The tester, opened with `workflow`'s criteria when given."""
    url = reverse("workflows_criteria_tester")
    return f"{url}?{urlencode({'workflow': workflow.pk})}" if workflow is not None else url


def criteria_tester_view(request):
    if not request.user.has_perm("contacts.view_contact"):
        raise PermissionDenied
    preview = None
    workflow = _tester_workflow(request) if request.method != "POST" else None
    if workflow is not None:
        # Opened from a workflow: its tree in the editor, and the result at once (a tester
        # run writes nothing, so there is no reason to make the user press the button).
        form = CriteriaTesterForm(initial={"criteria": workflow.criteria})
        tree = workflow.criteria
        now = timezone.now()
    else:
        form = CriteriaTesterForm(request.POST or None)
        tree = None
        if request.method == "POST" and form.is_valid():
            now = form.cleaned_data.get("now") or timezone.now()
            tree = form.cleaned_data["criteria"]
    if tree is not None:
        try:
            preview = {
                "result": criteria_preview(tree=tree, now=now),
                "now": now,
                "canonical": json.dumps(criteria_validate(tree).as_json(), indent=2),
            }
        except CriteriaError as exc:  # a workflow's stored tree that no longer validates
            form.add_error(None, exc.as_validation_error())
    context = {
        **admin.site.each_context(request),
        "title": "Criteria tester",
        "form": form,
        "preview": preview,
        "workflow": workflow,
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


# The hygiene wizard, the savings report, policies and rotation plans are in
# workflows.admin_hygiene; importing it registers their admins.
admin_urls += hygiene_admin_urls


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

    user = None  # the user saving the form (WorkflowAdmin.get_form)

    def clean_actions(self):
        actions = self.cleaned_data.get("actions") or []
        refusal = status_actions_refusal(self.user, actions)
        if refusal:
            raise forms.ValidationError(refusal)
        return actions


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
        "test_criteria",
    ]
    list_filter = ["enabled", "purpose", "event_triggered"]
    search_fields = ["name"]
    readonly_fields = ["last_run_at", "created_by", "recent_runs"]

    def get_fieldsets(self, request, obj=None):
        fieldsets = [
            (None, {"fields": ["name", "description", "enabled", "purpose"]}),
            (
                "Who",
                {
                    "fields": ["criteria"],
                    "description": format_html(
                        '<a href="{}">Open these criteria in the criteria tester</a> to see '
                        "which contacts they select now (the saved criteria; save first to "
                        "test your edits).",
                        criteria_tester_url(obj),
                    )
                    if obj is not None
                    else format_html(
                        'Try criteria out in the <a href="{}">criteria tester</a>.',
                        criteria_tester_url(),
                    ),
                },
            ),
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

    @admin.display(description="Criteria")
    def test_criteria(self, obj):
        return format_html('<a href="{}">Test</a>', criteria_tester_url(obj))

    @admin.display(description="Recent runs")
    def recent_runs(self, obj):
        return _recent_runs_table(obj)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        return type(form.__name__, (form,), {"user": request.user})

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
        refusal = status_actions_refusal(request.user, workflow.actions)
        if refusal:
            raise PermissionDenied(refusal)
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


_CURSORS = ("cursor", "emailed_through")
# How a run's per-action counts read on its page, and in which order (PostgreSQL's jsonb
# keeps keys in its own order, not the order they were written in).
_RESULT_ORDER = [
    "changed",
    "cancelled",
    "scheduled",
    "added",
    "removed",
    "sent",
    "refused_non_marketing",
    "refused_unsubscribed",
    "refused_bounced",
]


def _result_order(key: str) -> tuple[int, str]:
    return (_RESULT_ORDER.index(key) if key in _RESULT_ORDER else len(_RESULT_ORDER), key)


_RESULT_WORDS = {
    "scheduled": "scheduled to become non-marketing at their next update date",
    "refused_non_marketing": "refused (not marketing contacts)",
    "refused_unsubscribed": "refused (unsubscribed)",
    "refused_bounced": "refused (bounced)",
}


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
    readonly_fields = ["ranges", "action_results"]

    def get_fields(self, request, obj=None):
        """The actions' results in sentences where the stored JSON was; a run shared by the
        workers shows its ranges where a run in one process shows its cursors (each has
        only one of them)."""
        fields = [
            "action_results" if f == "results" else f
            for f in super().get_fields(request, obj)
            if f not in self.readonly_fields
        ]
        if obj is None or not obj.chunks.exists():
            return fields
        at = fields.index("cursor")
        return [*fields[:at], "ranges", *(f for f in fields[at:] if f not in _CURSORS)]

    @admin.display(description="Results")
    def action_results(self, run):
        """Each action's counts, in the actions' order: "2. Set lifecycle stage or lead
        status: 111 changed"."""
        if not run.results:
            return "—"
        lines = []
        for name, counts in sorted(
            run.results.items(), key=lambda item: int(item[0].split(":")[0])
        ):
            number, kind = name.split(":", 1)
            label = ActionType(kind).label if kind in ActionType.values else kind
            told = ", ".join(
                f"{counts[key]:,} {_RESULT_WORDS.get(key, key.replace('_', ' '))}"
                for key in sorted(counts, key=_result_order)
            )
            lines.append((number, label, told))
        return format_html_join(mark_safe("<br>"), "{}. {}: {}", lines)

    @admin.display(description="Ranges shared by the workers")
    def ranges(self, run):
        """A run shared by the workers: how many of its ranges of contact ids are done."""
        counts = run.chunks.aggregate(
            total=Count("pk"), done=Count("pk", filter=Q(done_at__isnull=False))
        )
        return f"{counts['done']:,} of {counts['total']:,} done"

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
