"""Browser tests: Playwright driving Debian's Chromium against pytest-django's live server.

They run when Chromium is installed (`.ci/run` installs it; elsewhere set CHROMIUM to a
binary) and are skipped otherwise, saying why.

Every test that uses `page` is watched: a console error, an uncaught exception in the
page, or a 4xx/5xx answer to a request the page made to the live server fails it (at the
end of the test, with the whole list), unless the test declared that answer expected
with `browser_problems.expect(status, path)`. Every step a test names with `shot(step)`
is saved as `artifacts/screens/<test>-<nn>-<step>.png` (CI keeps the folder), and a
failing test also saves `<test>-failure.png` as the page stood.
"""

import io
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.apps import apps as django_apps
from django.core.management import call_command

from billing.models import Subscription
from crm.roles import sync_roles
from tests.factories import UserFactory

# Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
# around it are still synchronous.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or ""
PASSWORD = "a-browser-test-password"
SCREENS = Path(__file__).resolve().parents[2] / "artifacts" / "screens"
# Demo data: enough contacts for every list to page and filter, small enough to seed in
# about a second on SQLite (the live server's database is emptied after each test).
DEMO_CONTACTS = 400

_FAILED_RESOURCE = re.compile(
    r"Failed to load resource: the server responded with a status of (\d+)"
)

PROBLEMS = pytest.StashKey["BrowserProblems"]()
PAGE = pytest.StashKey["object"]()


def pytest_collection_modifyitems(config, items):
    if CHROMIUM:
        return
    skip = pytest.mark.skip(reason="no Chromium: install Debian's chromium or set CHROMIUM")
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(skip)


@dataclass
class BrowserProblems:
    """What went wrong in the page while a test ran: console errors, uncaught exceptions,
    and 4xx/5xx answers of the live server that the test did not declare expected."""

    origin: str
    problems: list[str] = field(default_factory=list)
    expected: list[tuple[int, str]] = field(default_factory=list)

    def expect(self, status: int, path: str) -> None:
        """Declare that a request to `path` (exactly, without the query) may answer `status`."""
        self.expected.append((status, path))

    def is_expected(self, status: int, url: str) -> bool:
        return url.startswith(self.origin) and (status, urlsplit(url).path) in self.expected

    def on_console(self, message) -> None:
        if message.type == "error":
            location = message.location or {}
            # Chromium repeats each 4xx/5xx as a console error; an expected one is not.
            failed = _FAILED_RESOURCE.match(message.text)
            if failed and self.is_expected(int(failed[1]), location.get("url", "")):
                return
            self.problems.append(
                f"console error: {message.text} ({location.get('url', '?')}:"
                f"{location.get('lineNumber', '?')})"
            )

    def on_page_error(self, error) -> None:
        self.problems.append(f"uncaught exception in the page: {error}")

    def on_response(self, response) -> None:
        if response.status < 400 or not response.url.startswith(self.origin):
            return
        if self.is_expected(response.status, response.url):
            return
        path = urlsplit(response.url).path
        self.problems.append(
            f"{response.status} for {response.request.method} {path} "
            f"(a request of the page itself; expect it explicitly if it is meant)"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Fail the test on what the page reported, and save the page of a failing test."""
    try:
        result = yield
    except BaseException:
        _failure_screenshot(item)
        problems = item.stash.get(PROBLEMS, None)
        if problems is not None and problems.problems:
            item.add_report_section("call", "browser", "\n".join(problems.problems))
        raise
    problems = item.stash.get(PROBLEMS, None)
    if problems is not None and problems.problems:
        _failure_screenshot(item)
        raise AssertionError(
            "The browser reported problems:\n" + "\n".join(f"- {p}" for p in problems.problems)
        )
    return result


def _failure_screenshot(item) -> None:
    page = item.stash.get(PAGE, None)
    if page is None or page.is_closed():
        return
    try:
        SCREENS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENS / f"{_slug(item.name)}-failure.png"), full_page=True)
    except Exception:  # a crashed page has nothing to show; the failure itself is reported
        pass


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def browser_problems(request, live_server) -> BrowserProblems:
    problems = BrowserProblems(origin=live_server.url)
    request.node.stash[PROBLEMS] = problems
    return problems


@pytest.fixture
def page(browser, request, browser_problems):
    context = browser.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.on("console", browser_problems.on_console)
    page.on("pageerror", browser_problems.on_page_error)
    page.on("response", browser_problems.on_response)
    request.node.stash[PAGE] = page
    yield page
    context.close()


@pytest.fixture
def shot(page, request):
    """`shot("step")` saves the whole page as artifacts/screens/<test>-<nn>-<step>.png."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    test = _slug(request.node.name)
    for old in SCREENS.glob(f"{test}-*.png"):
        old.unlink()
    steps = []

    def take(step: str) -> Path:
        steps.append(step)
        path = SCREENS / f"{test}-{len(steps):02d}-{_slug(step)}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def login(page, live_server, transactional_db):
    """Log in through the real login form as a new user; returns a `goto(path)` helper."""

    # A transactional test starts from empty tables: put back the roles the migrations make.
    sync_roles(django_apps)

    def as_user(*, before_submit=None, **user_fields):
        user = UserFactory(**user_fields)
        user.set_password(PASSWORD)
        user.save()
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", user.username)
        page.fill("#id_password", PASSWORD)
        if before_submit is not None:
            before_submit()
        page.click("input[type=submit]")
        page.wait_for_url(f"{live_server.url}/admin/")
        return lambda path: page.goto(f"{live_server.url}{path}")

    return as_user


@pytest.fixture
def demo(transactional_db, monkeypatch):
    """The demo data `manage.py seed_demo` loads, at a small size: sources of every kind,
    contacts with a status history over the previous and the current period (the previous
    one ended and unclosed), pending downgrades, channels. The subscription is made small
    enough that a few dozen new marketing contacts start an overage block, so cost
    previews have money to show."""
    # Its "admin" user gets this password rather than a generated one written to a file.
    monkeypatch.setenv("ADMIN_PASSWORD", PASSWORD)
    call_command(
        "seed_demo",
        contacts=DEMO_CONTACTS,
        leave_last_month_open=True,
        verbosity=0,
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    subscription = Subscription.load()
    subscription.included_contacts = 200
    subscription.block_size = 100
    subscription.save()
    return subscription
