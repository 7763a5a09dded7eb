"""The admin site: Marketable's name, its home page, and the models grouped by task.

Django lists models by app, which here means by code layout (the contacts app holds
intake, imports, outreach and the ledger). People look for a task — bring contacts in,
decide who is marketing, watch the bill — so the index and the sidebar group them so.
An app's own page (<admin>/contacts/) keeps Django's grouping.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.urls import reverse

# (group title, anchor, [(app_label, model_name), ...]) in the order the index shows them.
TASKS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Contacts",
        "contacts",
        [
            ("contacts", "contact"),
            ("contacts", "contactlist"),
            ("contacts", "source"),
            ("contacts", "engagementevent"),
        ],
    ),
    (
        "Marketing status",
        "status",
        [
            ("contacts", "pendingapproval"),
            ("contacts", "statuschange"),
            ("contacts", "bulkstatusjob"),
            ("contacts", "statuschangerequest"),
            ("contacts", "periodusage"),
        ],
    ),
    (
        "Workflows and scoring",
        "workflows",
        [
            ("workflows", "workflow"),
            ("workflows", "workflowrun"),
            ("workflows", "enrollment"),
            ("workflows", "scoringrule"),
            ("workflows", "hygienepolicy"),
            ("workflows", "hygienerun"),
            ("workflows", "rotationplan"),
            ("workflows", "rotationrun"),
            ("workflows", "rotationmember"),
        ],
    ),
    (
        "Bringing contacts in",
        "intake",
        [
            ("contacts", "contactimport"),
            ("contacts", "form"),
            ("contacts", "formsubmission"),
            ("contacts", "chatflow"),
            ("contacts", "connectedapp"),
            ("contacts", "adaccount"),
            ("contacts", "adlead"),
        ],
    ),
    (
        "Reaching contacts",
        "outreach",
        [
            ("contacts", "marketingemail"),
            ("contacts", "emailsend"),
            ("contacts", "adaudience"),
            ("contacts", "communication"),
            ("contacts", "unsubscription"),
        ],
    ),
    (
        "Billing",
        "billing",
        [
            ("billing", "billingperiod"),
            ("billing", "invoice"),
            ("billing", "dailyusage"),
            ("billing", "alert"),
            ("billing", "subscription"),
        ],
    ),
    (
        "Account and people",
        "account",
        [
            ("crm", "account"),
            ("auth", "user"),
            ("auth", "group"),
            ("authtoken", "tokenproxy"),
        ],
    ),
]


def group_by_task(app_list: list[dict], index_url: str) -> list[dict]:
    """Django's app list regrouped by TASKS; a model no task names goes under "Other"."""
    by_key = {
        (app["app_label"], model["object_name"].lower()): (app, model)
        for app in app_list
        for model in app["models"]
    }
    groups = []
    for title, anchor, keys in TASKS:
        models = [by_key.pop(key)[1] for key in keys if key in by_key]
        if models:
            groups.append(_group(title, anchor, models, index_url))
    if by_key:
        leftovers = [model for _, model in by_key.values()]
        groups.append(_group("Other", "other", leftovers, index_url))
    return groups


def _group(title: str, anchor: str, models: list[dict], index_url: str) -> dict:
    # The anchor doubles as the app label: "contacts", "workflows" and "billing" keep
    # Django's per-app CSS classes and the billing dashboard's entry (billing/admin).
    return {
        "name": title,
        "app_label": anchor,
        "anchor": anchor,
        "app_url": f"{index_url}#{anchor}",
        "has_module_perms": True,
        "models": models,
    }


class MarketableAdminSite(admin.AdminSite):
    site_header = "Marketable"
    site_title = "Marketable"
    index_title = "Home"
    # There is no public site to view: the hosted forms have their own links, and "/"
    # leads to this admin.
    site_url = None
    # A long dash for "nothing here", as the billing pages write it.
    empty_value_display = "—"

    def get_app_list(self, request, app_label=None):
        app_list = super().get_app_list(request, app_label)
        if app_label:
            return app_list
        return group_by_task(app_list, reverse("admin:index", current_app=self.name))


class MarketableAdminConfig(AdminConfig):
    """django.contrib.admin with MarketableAdminSite as `admin.site` (see INSTALLED_APPS)."""

    default = False
    default_site = "crm.admin_site.MarketableAdminSite"
