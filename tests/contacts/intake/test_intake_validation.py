"""The intake endpoints check what the schema documents before anything else: JSON only,
types and choices; the honeypot is looked at only in a valid submission."""

import pytest
from rest_framework.test import APIClient

from contacts.intake.models import Chatflow, Form, FormSubmission
from contacts.intake.services import chatflow_save, form_save
from contacts.models import Contact

FORM_URL = "/api/intake/forms/newsletter/"
EXTERNAL = "/api/intake/external-forms/"


@pytest.fixture
def form(account):
    return form_save(
        form=Form(
            name="Newsletter",
            slug="newsletter",
            fields=[{"name": "first_name", "required": False}],
        )
    )


def nothing_stored() -> bool:
    return not (Contact.objects.exists() or FormSubmission.objects.exists())


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@example.com", "first_name": 7}, "first_name"),
        ({"email": "a@example.com", "consent": "yes"}, "consent"),
        # a field this form does not ask is still checked against the documented choices
        ({"email": "a@example.com", "contact_type": "AAA"}, "contact_type"),
        ({"email": "a@example.com", "website": None}, "website"),
    ],
)
def test_a_form_submission_of_the_wrong_type_is_refused(form, body, field):
    response = APIClient().post(FORM_URL, body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert nothing_stored()


def test_an_invalid_submission_with_the_honeypot_filled_is_a_400(form):
    response = APIClient().post(FORM_URL, {"website": "http://spam"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"email": ["This field is required."]}
    assert nothing_stored()


def test_an_invalid_external_submission_with_the_honeypot_filled_is_a_400(account):
    response = APIClient().post(
        EXTERNAL, {"form_id": "wp", "fields": {"first_name": "Bot"}, "website": "x"}, format="json"
    )

    assert response.status_code == 400
    assert "fields" in response.json()
    assert nothing_stored()


def test_an_invalid_chat_with_the_honeypot_filled_is_a_400(account):
    chatflow = chatflow_save(chatflow=Chatflow(name="Pricing bot"))

    response = APIClient().post(
        f"/api/intake/chatflows/{chatflow.pk}/", {"website": "x", "email": 5}, format="json"
    )

    assert response.status_code == 400
    assert "email" in response.json()
    assert not Contact.objects.exists()


def test_a_form_post_to_the_api_is_refused_as_unsupported(form):
    response = APIClient().post(FORM_URL, {"email": "a@example.com"}, format="multipart")

    assert response.status_code == 415
    assert nothing_stored()
