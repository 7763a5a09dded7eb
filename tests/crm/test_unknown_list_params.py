"""Every list of the API refuses a parameter it does not know, naming the ones it does."""

import pytest
from rest_framework.test import APIClient

from tests.factories import ContactFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(db):
    client = APIClient()
    user = UserFactory(username="api-admin", is_superuser=True)
    client.force_authenticate(user)
    return client


def test_an_unknown_contacts_filter_is_a_400_listing_the_valid_ones(api):
    ContactFactory(lifecycle_stage="lead")
    ContactFactory(lifecycle_stage="customer")

    response = api.get("/api/contacts/", {"lifecycle": "lead"})

    assert response.status_code == 400
    message = response.json()["lifecycle"][0]
    assert message.startswith("Not a parameter of this list. Valid parameters: ")
    for valid in ("lifecycle_stage", "marketing_status", "pending", "cursor", "page_size"):
        assert valid in message


def test_known_filters_pagination_and_format_are_accepted(api):
    ContactFactory(lifecycle_stage="lead")
    ContactFactory(lifecycle_stage="customer")

    response = api.get(
        "/api/contacts/", {"lifecycle_stage": "lead", "page_size": "10", "format": "json"}
    )

    assert response.status_code == 200
    assert [c["lifecycle_stage"] for c in response.json()["results"]] == ["lead"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/sources/",
        "/api/workflows/",
        "/api/workflow-runs/",
        "/api/scoring-rules/",
        "/api/billing/periods/",
        "/api/billing/invoices/",
        "/api/contacts/export/",
    ],
)
def test_every_list_refuses_an_unknown_parameter(api, url):
    assert api.get(url).status_code == 200
    response = api.get(url, {"no_such_filter": "1"})
    assert response.status_code == 400
    assert "Valid parameters: " in response.json()["no_such_filter"][0]


def test_the_valid_parameters_of_a_list_with_a_filterset_include_its_filters(api):
    response = api.get("/api/workflow-runs/", {"wrkflow": "1"})
    assert response.status_code == 400
    message = response.json()["wrkflow"][0]
    assert "workflow" in message and "status" in message


def test_one_object_is_not_a_list(api):
    contact = ContactFactory()
    response = api.get(f"/api/contacts/{contact.pk}/", {"fields": "email"})
    assert response.status_code == 200
    assert response.json()["id"] == contact.pk
