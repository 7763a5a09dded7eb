import datetime as dt
import time

import pytest
from django.apps import apps as django_apps
from django.db import connection

from contacts.status.results import StatusSource
from crm.models import Account
from crm.roles import sync_roles
from tests.factories import ContactFactory, SourceFactory, UserFactory

UTC = dt.UTC


def pytest_collection_modifyitems(config, items):
    skip_pg = pytest.mark.skip(reason="needs PostgreSQL (set DATABASE_URL)")
    for item in items:
        if "postgres" in item.keywords and connection.vendor != "postgresql":
            item.add_marker(skip_pg)


@pytest.fixture(autouse=True)
def fresh_navigation():
    """Each test starts with no sidebar rendered: the process keeps them a minute, and the
    tests reuse user ids over tables they empty."""
    from crm.admin_site import NAV_CACHE

    NAV_CACHE.clear()


@pytest.fixture(autouse=True)
def one_throttle_window(monkeypatch):
    """Each test's requests fall in one window of the intake throttles.

    The throttles count per fixed window of the clock; a test that began a second before a
    minute's end would otherwise see its allowance renewed halfway through.
    """
    from crm.throttling import ScopedCounterThrottle

    now = time.time()
    monkeypatch.setattr(ScopedCounterThrottle, "timer", staticmethod(lambda: now))


@pytest.fixture
def account(db):
    """A monthly calendar updating on the 1st, in UTC."""
    account = Account.load()
    account.update_day = 1
    account.yearly_plan = False
    account.time_zone = "UTC"
    account.save()
    return account


@pytest.fixture
def source(db):
    return SourceFactory(name="Manual", kind="manual")


@pytest.fixture
def contact_factory(db):
    return ContactFactory


@pytest.fixture
def manual():
    return StatusSource("manual", name="test")


@pytest.fixture
def roles(transactional_db):
    """The role groups, for a transactional test: the tests before it may have emptied the
    tables the roles migration filled."""
    sync_roles(django_apps)


@pytest.fixture
def marketing_ops(db):
    return UserFactory(username="ops", groups=["Marketing ops"])


@pytest.fixture
def sales(db):
    return UserFactory(username="sales", groups=["Sales"])


@pytest.fixture
def superuser(db):
    return UserFactory(username="root", is_superuser=True)


def at(year, month, day, hour=0, minute=0, second=0):
    return dt.datetime(year, month, day, hour, minute, second, tzinfo=UTC)
