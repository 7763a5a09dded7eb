"""docs/PERMISSIONS.md shows the role matrix the other matrix tests perform, and the matrix
has a row for every admin page and action and every API endpoint the code has (so a new
one cannot go undocumented and untested)."""

import re
from pathlib import Path

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.test import RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver

from crm import roles
from tests.crm.permission_matrix import DOC, END, START, render_markdown
from tests.crm.permission_matrix_api import API_ROWS, PUBLIC_ROWS
from tests.crm.permission_matrix_models import ADMIN_MODELS
from tests.crm.permission_matrix_pages import ADMIN_ROWS
from tests.crm.permission_rows import ADMIN, API, PUBLIC, ROLE_GROUPS

# Django's own admin pages, not one model's: the index, login and password pages,
# autocomplete (it follows the related model's view permission), the app pages.
ADMIN_SITE_PAGES = {
    "index",
    "login",
    "logout",
    "password_change",
    "password_change_done",
    "autocomplete",
    "view_on_site",
    "app_list",
    "jsi18n",
}
# A model's pages the matrix's list/add/change/delete rows stand for; the history page and
# the bare object URL (a redirect to its change page) follow the view permission.
MODEL_PAGES = ("changelist", "add", "history", "delete", "change")


def routes(patterns=None, prefix=""):
    """(route, name, callback) of every URL pattern, with its prefixes."""
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(pattern, URLResolver):
            yield from routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.name, pattern.callback


def as_path(route: str) -> str:
    """A URL pattern as the matrix writes it: /api/contacts/{id}/."""
    route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route)
    route = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
    route = route.replace("^", "").replace("$", "")
    return "/" + route.replace("{pk}", "{id}").replace("{object_id}", "{id}")


def methods_of(callback) -> set[str]:
    if getattr(callback, "actions", None):  # a viewset's route (its first GET adds HEAD)
        return {method.upper() for method in callback.actions if method != "head"}
    view = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    return {
        method.upper()
        for method in view.http_method_names
        if method not in ("options", "head") and hasattr(view, method)
    }


def test_the_doc_shows_the_matrix():
    text = (Path(settings.BASE_DIR) / DOC).read_text(encoding="utf-8")
    assert START in text and END in text, f"{DOC} lost its markers"
    shown = text.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"

    # Run `python -m tests.crm.permission_matrix` to rewrite the table after a change.
    assert shown == render_markdown()


def test_every_api_endpoint_and_method_has_a_row():
    in_code = {
        (method, as_path(route))
        for route, _, callback in routes()
        if route.startswith("api/")
        for method in methods_of(callback)
    }
    in_matrix = {(row.method, row.path) for row in API_ROWS}

    assert in_matrix == in_code


def test_every_public_page_has_a_row():
    # The HubSpot-compatible API (/crm/v3/) takes the same tokens and permissions as the
    # contacts API; its own tests walk them (tests/contacts/hubspot/test_api.py).
    in_code = {
        as_path(route)
        for route, _, _ in routes()
        if not route.startswith(("admin/", "api/", "crm/v3/"))
    }

    assert {row.path for row in PUBLIC_ROWS} == in_code


def test_every_registered_model_has_its_four_rows_and_the_matrix_no_other():
    registered = {model._meta.label_lower for model in admin.site._registry}
    paths = {(row.method, row.path) for row in ADMIN_ROWS}

    assert {spec.label for spec in ADMIN_MODELS} == registered
    for label in registered:
        base = "/admin/{}/{}/".format(*label.split("."))
        for page in (("GET", base), ("POST", base + "add/")):
            assert page in paths
        for page in ("change", "delete"):
            assert ("POST", f"{base}{{id}}/{page}/") in paths


def test_every_admin_page_of_its_own_has_a_row():
    standard = {f"{label.replace('.', '_')}_{page}" for label in _labels() for page in MODEL_PAGES}
    own_pages = {
        as_path(route)
        for route, name, _ in routes()
        if route.startswith("admin/")
        and name not in ADMIN_SITE_PAGES
        and name not in standard
        and name is not None
    }
    in_matrix = {row.path for row in ADMIN_ROWS}

    assert own_pages <= in_matrix, own_pages - in_matrix


def test_every_admin_action_has_a_row():
    request = RequestFactory().get("/admin/")
    request.user = User(username="all", is_superuser=True, is_staff=True, is_active=True)
    in_code = {
        (model._meta.label_lower, name)
        for model, model_admin in admin.site._registry.items()
        for name in model_admin.get_actions(request)
    }
    in_matrix = {
        (row.path.strip("/").split("/", 1)[1].replace("/", "."), row.action_name)
        for row in ADMIN_ROWS
        if row.action_name
    }

    assert in_matrix == in_code


def test_the_columns_are_the_roles_the_migrations_made(db):
    made = set(Group.objects.values_list("name", flat=True))

    assert set(ROLE_GROUPS.values()) == set(roles.ROLE_PERMISSIONS) <= made


def test_each_row_is_one_interface_and_says_what_it_needs():
    for row in ADMIN_ROWS + API_ROWS + PUBLIC_ROWS:
        assert row.interface in (ADMIN, API, PUBLIC)
        assert row.needs, row.key
    assert len({row.key for row in ADMIN_ROWS + API_ROWS + PUBLIC_ROWS}) == len(
        ADMIN_ROWS + API_ROWS + PUBLIC_ROWS
    )


def _labels():
    return [model._meta.label_lower for model in admin.site._registry]
