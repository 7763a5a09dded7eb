import pytest
from django.test import Client

from tests.factories import UserFactory


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def ops_client(marketing_ops):
    return _client_for(marketing_ops)


@pytest.fixture
def sales_client(sales):
    return _client_for(sales)


@pytest.fixture
def super_client(superuser):
    return _client_for(superuser)


@pytest.fixture
def auditor(db):
    return UserFactory(username="auditor", groups=["Auditor"])


@pytest.fixture
def auditor_client(auditor):
    return _client_for(auditor)
