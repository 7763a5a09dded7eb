"""Requests the schema forbids are refused with a 400 naming the field, and nothing is stored;
errors are JSON objects wherever they come from."""

import base64

import pytest
from rest_framework.exceptions import ValidationError
from rest_framework.test import APIClient

from contacts.models import Contact, Source
from contacts.outreach.models import AdAudience, ContactList
from crm.exceptions import exception_handler
from tests.factories import ContactFactory, SourceFactory, UserFactory
from workflows.models import Workflow


@pytest.fixture
def api(account):
    client = APIClient()
    client.force_authenticate(UserFactory(username="root", is_superuser=True))
    return client


@pytest.mark.parametrize(
    ("url", "body", "field"),
    [
        ("/api/ad-audiences/", {"name": 0, "platform": "facebook"}, "name"),
        ("/api/contact-lists/", {"name": "VIP", "description": 7}, "description"),
        (
            "/api/sources/",
            {"name": "Fair", "kind": "form", "default_marketing": 0},
            "default_marketing",
        ),
        (
            "/api/sources/",
            {"name": "Fair", "kind": "form", "default_marketing": "true"},
            "default_marketing",
        ),
        ("/api/contacts/", {"email": "a@example.com", "lead_score": "5"}, "lead_score"),
        ("/api/contacts/", {"email": "a@example.com", "unsubscribed": "yes"}, "unsubscribed"),
        ("/api/workflows/", {"name": "W", "criteria": {}, "enabled": 1}, "enabled"),
    ],
)
def test_a_value_of_the_wrong_json_type_is_refused(api, url, body, field):
    before = stored()

    response = api.post(url, body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert stored() == before


def stored() -> tuple[int, ...]:
    models = (Contact, Source, AdAudience, ContactList, Workflow)
    return tuple(model.objects.count() for model in models)


def test_a_reference_given_as_text_is_refused(api):
    source = SourceFactory(name="Fair", kind="manual")

    response = api.post(
        "/api/contacts/", {"email": "a@example.com", "source": str(source.pk)}, format="json"
    )

    assert response.status_code == 400
    assert "source" in response.json()
    assert not Contact.objects.exists()


def test_an_id_list_refuses_ids_given_as_text(api):
    contact = ContactFactory()

    response = api.post(
        "/api/contacts/marketing-status/",
        {"status": "marketing", "ids": [str(contact.pk)]},
        format="json",
    )

    assert response.status_code == 400
    assert "ids" in response.json()
    contact.refresh_from_db()
    assert contact.marketing_status == "non_marketing"


def test_an_unknown_choice_is_refused(api):
    response = api.post(
        "/api/contacts/marketing-status/", {"status": "MARKETING", "ids": [1]}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"status": ['"MARKETING" is not a valid choice.']}


def test_the_api_reads_json_only(api):
    response = api.post(
        "/api/ad-audiences/", {"name": "A", "platform": "facebook"}, format="multipart"
    )

    assert response.status_code == 415
    assert "detail" in response.json()
    assert not AdAudience.objects.exists()


@pytest.mark.parametrize("page_size", ["null", "0", "-1", "ten", "1.5"])
def test_a_bad_page_size_is_refused(api, page_size):
    response = api.get("/api/contacts/", {"page_size": page_size})

    assert response.status_code == 400
    assert "page_size" in response.json()


def test_a_large_page_size_is_capped(api):
    ContactFactory.create_batch(2)

    assert len(api.get("/api/contacts/", {"page_size": "100000"}).json()["results"]) == 2


@pytest.mark.parametrize(
    "cursor",
    ["garbage!", base64.b64encode(b"p=abc").decode(), base64.b64encode(b"o=x").decode()],
)
def test_a_cursor_the_api_did_not_make_is_a_400(api, cursor):
    ContactFactory.create_batch(2)

    response = api.get("/api/contacts/", {"cursor": cursor})

    assert response.status_code == 400
    assert "cursor" in response.json()


def test_a_cursor_the_api_made_still_works(api):
    ContactFactory.create_batch(3)

    first = api.get("/api/contacts/", {"page_size": 2}).json()
    second = api.get(first["next"]).json()

    assert len(first["results"]) == 2 and len(second["results"]) == 1


@pytest.mark.parametrize(
    "params",
    [
        {"lifecycle_stage": ""},
        {"created_after": ""},
        {"pending": ""},
        {"lead_score_min": ""},
        {"source": ""},
    ],
)
def test_an_empty_filter_value_is_refused_unless_the_filter_takes_text(api, params):
    ContactFactory()

    response = api.get("/api/contacts/", params)

    assert response.status_code == 400
    assert set(response.json()) == set(params)


def test_an_empty_text_filter_is_no_filter(api):
    ContactFactory.create_batch(2)

    response = api.get("/api/contacts/", {"search": "", "email": ""})

    assert response.status_code == 200
    assert len(response.json()["results"]) == 2


def test_the_filters_of_other_lists_are_strict_too(api):
    assert api.get("/api/sources/", {"kind": ""}).status_code == 400
    assert api.get("/api/workflow-runs/", {"status": "bogus"}).status_code == 400
    assert api.get("/api/workflow-runs/", {"workflow": "abc"}).status_code == 400
    assert api.get("/api/workflow-runs/", {"workflow": "12345"}).json()["results"] == []


def test_an_unknown_api_url_answers_json(api):
    response = api.get("/api/no-such-thing/")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_an_unknown_url_elsewhere_answers_html(api):
    response = api.get("/no-such-page/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_a_format_parameter_is_not_a_way_to_get_a_404(api):
    assert api.get("/api/contacts/", {"format": "xml"}).status_code == 200


def test_the_export_answers_errors_in_json_even_when_csv_was_asked(api):
    response = api.get(
        "/api/contacts/export/", {"lifecycle_stage": "bogus"}, HTTP_ACCEPT="text/csv"
    )

    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "lifecycle_stage" in response.json()


def test_an_error_that_is_a_bare_list_is_answered_as_an_object():
    response = exception_handler(ValidationError(["Something is wrong."]), {})

    assert response.status_code == 400
    assert response.data == {"non_field_errors": ["Something is wrong."]}
