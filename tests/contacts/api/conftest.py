"""The contacts API tests' clients, by role, and a lapsed pending contact."""

import datetime as dt

import pytest
from django.utils import timezone

from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from tests.contacts.api.support import M, client_for
from tests.factories import ContactFactory


@pytest.fixture
def ops(account, marketing_ops):
    return client_for(marketing_ops)


@pytest.fixture
def sales_client(account, sales):
    return client_for(sales)


@pytest.fixture
def root(account, superuser):
    return client_for(superuser)


@pytest.fixture
def past_pending(account, manual):
    """A contact made marketing and scheduled non-marketing two periods ago, never rolled
    over: its pending date has passed, so it is effectively non-marketing. List it before
    fixtures that change statuses now (the change clock never runs backwards)."""
    contact = ContactFactory(email="lapsed@example.com")
    long_ago = timezone.now() - dt.timedelta(days=70)
    contacts_set_marketing(contacts=contact, source=manual, at=long_ago)
    contacts_set_non_marketing(contacts=contact, source=manual, at=long_ago)
    contact.refresh_from_db()
    assert contact.marketing_status == M and contact.marketing_until < timezone.now()
    return contact
