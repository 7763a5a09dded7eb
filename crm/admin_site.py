"""The admin site: Marketable's name, its home page, and the models grouped by task.

Django lists models by app, which here means by code layout (the contacts app holds
intake, imports, outreach and the ledger). People look for a task — bring contacts in,
decide who is marketing, watch the bill — so the index and the sidebar group them so.
An app's own page (<admin>/contacts/) keeps Django's grouping.
"""

from __future__ import annotations

import time

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.functional import SimpleLazyObject, cached_property
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language

# The navigation sidebar, rendered once a minute per user and permissions (see
# MarketableAdminSite.nav_sidebar_apps), in this process: {key: (expires, html)}.
NAV_SECONDS = 60
NAV_ENTRIES = 1_000
NAV_CACHE: dict[tuple, tuple[float, str]] = {}

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


class LazyHtml:
    """Markup rendered the first time a template prints it, if it ever does."""

    def __init__(self, render):
        self.render = render

    @cached_property
    def html(self) -> SafeString:
        return mark_safe(self.render())  # noqa: S308 (rendered by the template engine)

    def __html__(self) -> SafeString:
        return self.html

    def __str__(self) -> SafeString:
        return self.html


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

    def each_context(self, request):
        """Django's context of every admin page, with the app list built only when a page
        shows it (the home page) and the sidebar's copy of it rendered once a minute
        (nav_sidebar_apps): the two were a sixth of a contacts list page's time."""
        script_name = request.META["SCRIPT_NAME"]
        context = {
            "site_title": self.site_title,
            "site_header": self.site_header,
            "site_url": script_name if self.site_url == "/" and script_name else self.site_url,
            "has_permission": self.has_permission(request),
            "available_apps": SimpleLazyObject(lambda: self.get_app_list(request)),
            "is_popup": False,
            "is_nav_sidebar_enabled": self.enable_nav_sidebar,
            "log_entries": self.get_log_entries(request),
        }
        context["nav_sidebar_apps"] = LazyHtml(lambda: self.nav_sidebar_apps(request, context))
        return context

    def nav_sidebar_apps(self, request, context) -> str:
        """The sidebar's list of models (admin/app_list.html), from this process's cache.

        What the list shows depends on the user's permissions and on which model's pages
        are open (the highlighted row), which the key holds; and, for the models with one
        row (the account, the subscription, the hygiene policy), on whether that row
        exists yet: their "Add" link may show for up to NAV_SECONDS after it is created,
        and the add page itself refuses then."""
        user = request.user
        permissions = "all" if user.is_superuser else frozenset(user.get_all_permissions())
        index = reverse("admin:index", current_app=self.name)
        section = request.path.removeprefix(index).split("/")[:2]
        key = (self.name, user.pk, user.is_active, permissions, *section, get_language())
        now = time.monotonic()
        cached = NAV_CACHE.get(key)
        if cached and cached[0] > now:
            return cached[1]
        html = render_to_string(
            "admin/app_list.html",
            {"app_list": context["available_apps"], "show_changelinks": False},
            request,
        )
        if len(NAV_CACHE) >= NAV_ENTRIES:
            NAV_CACHE.clear()
        NAV_CACHE[key] = (now + NAV_SECONDS, html)
        return html


class MarketableAdminConfig(AdminConfig):
    """django.contrib.admin with MarketableAdminSite as `admin.site` (see INSTALLED_APPS)."""

    default = False
    default_site = "crm.admin_site.MarketableAdminSite"
