"""The workflows admin. For now: the criteria tester (a tree in, the match count and a sample out).

It is a plain admin page (no model yet) at /admin/workflows/criteria-tester/, for
staff who may view contacts; it writes nothing.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone

from workflows.criteria import CriteriaError, criteria_validate
from workflows.forms import CriteriaForm
from workflows.selectors import criteria_preview


class CriteriaTesterForm(CriteriaForm):
    raw = forms.CharField(
        label="…or paste a tree as JSON",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6, "cols": 80, "spellcheck": "false"}),
        help_text='HubSpot\'s shape, e.g. {"filterGroups": [{"filters": [{"propertyName": '
        '"lifecyclestage", "operator": "EQ", "value": "lead"}]}]}. Overrides the editor.',
    )
    now = forms.DateTimeField(
        label="As of",
        required=False,
        help_text="Day windows count back from this instant (default: now).",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["criteria"].required = False

    def clean(self):
        cleaned = super().clean()
        raw = (cleaned.get("raw") or "").strip()
        if raw:
            self.errors.pop("criteria", None)
            try:
                tree = json.loads(raw)
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


# Included by crm/urls.py ahead of admin.site.urls (workflows has no ModelAdmin yet).
admin_urls = [
    path(
        "workflows/criteria-tester/",
        admin.site.admin_view(criteria_tester_view),
        name="workflows_criteria_tester",
    ),
]


# --- engagement scoring (issue 5, item 7) ---

from django.contrib import messages as _messages  # noqa: E402
from django.http import HttpResponseNotAllowed as _NotAllowed  # noqa: E402
from django.http import HttpResponseRedirect as _Redirect  # noqa: E402
from django.urls import reverse as _reverse  # noqa: E402

from workflows.models import ScoringRule  # noqa: E402
from workflows.tasks import recompute_scores as _recompute_scores_task  # noqa: E402


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
            return _NotAllowed(["POST"])
        queued = _recompute_scores_task.delay()
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
        self.message_user(request, message, _messages.SUCCESS)
        return _Redirect(_reverse("admin:workflows_scoringrule_changelist"))
