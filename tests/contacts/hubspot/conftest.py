import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing


def bearer_client(user) -> APIClient:
    """An API client sending the user's token as HubSpot's clients do."""
    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
    return client


def make_marketing(*contacts) -> None:
    contacts_set_marketing(
        contacts=[c.pk for c in contacts], source=StatusSource("manual", name="test")
    )


@pytest.fixture
def ops_api(account, marketing_ops):
    return bearer_client(marketing_ops)


@pytest.fixture
def sales_api(account, sales):
    return bearer_client(sales)
