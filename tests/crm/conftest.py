"""The role matrix's world: built once per module, rolled back at its end (see
tests/crm/permission_world.py)."""

import logging

import pytest
from django.db import transaction
from django.template import Template
from django.test import override_settings
from django.test.utils import _TestState

from tests.crm.permission_rows import ROLES
from tests.crm.permission_world import (
    build_world,
    db_snapshot,
    log_in,
    media_files,
    restore_media,
    snapshot_tables,
)


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory):
    media = tmp_path_factory.mktemp("media")
    with (
        django_db_blocker.unblock(),
        override_settings(MEDIA_ROOT=str(media)),
        transaction.atomic(),
    ):
        w = build_world()
        w.browsers = {role: log_in(w, role) for role in ROLES}
        w.cookies = {
            id(client): {name: morsel.value for name, morsel in client.cookies.items()}
            for client, _ in w.browsers.values()
        }
        w.tables = snapshot_tables()
        w.baseline = db_snapshot(w.tables)
        w.form_cache = {}
        w.media = media_files(media)
        yield w
        transaction.set_rollback(True)


@pytest.fixture(scope="module")
def quick_pages():
    """Pages rendered as in production, without the test runner's instrumentation (which
    copies every template context for `response.context`, four times the render): the
    matrix reads the HTML, not the context. And no log line for each refused request."""
    instrumented = Template._render
    Template._render = _TestState.saved_data.template_render
    request_log = logging.getLogger("django.request")
    level = request_log.level
    request_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        Template._render = instrumented
        request_log.setLevel(level)


@pytest.fixture
def cell(world, quick_pages, db):
    """One cell: in a savepoint of the world's transaction (the `db` fixture), rolled back
    after it, with the uploaded files it may have deleted put back, and each browser's
    cookies as they were (setting a password cycles the session key of whoever sets it: the
    new session row goes with the rollback, the old key must come back)."""
    yield world
    restore_media(world.media)
    for client, _ in world.browsers.values():
        kept = world.cookies[id(client)]
        for name in [name for name in client.cookies if name not in kept]:
            del client.cookies[name]  # e.g. the messages a cell left
        for name, value in kept.items():
            if client.cookies.get(name) is None or client.cookies[name].value != value:
                client.cookies[name] = value
