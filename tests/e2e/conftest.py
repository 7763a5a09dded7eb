"""Browser tests: Playwright driving Debian's Chromium against pytest-django's live server.

They run when Chromium is installed (`.ci/run` installs it; elsewhere set CHROMIUM to a
binary) and are skipped otherwise, saying why.
"""

import os
import shutil

import pytest
from django.apps import apps as django_apps

from crm.roles import sync_roles
from tests.factories import UserFactory

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
# around it are still synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or ""
PASSWORD = "a-browser-test-password"


def pytest_collection_modifyitems(config, items):
    if CHROMIUM:
        return
    skip = pytest.mark.skip(reason="no Chromium: install Debian's chromium or set CHROMIUM")
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture
def login(page, live_server, transactional_db):
    """Log in through the real login form as a new user; returns a `goto(path)` helper."""

    # A transactional test starts from empty tables: put back the roles the migrations make.
    sync_roles(django_apps)

    def as_user(**user_fields):
        user = UserFactory(**user_fields)
        user.set_password(PASSWORD)
        user.save()
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", user.username)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"{live_server.url}/admin/")
        return lambda path: page.goto(f"{live_server.url}{path}")

    return as_user
