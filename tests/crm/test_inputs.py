"""What every interface refuses in JSON and text from outside (crm.inputs, crm.parsers,
crm.middleware): JSON nested deeper than JSON_MAX_DEPTH, and the NUL character. Each is a
clear 400 (or a form error in the admin), never a 500, and nothing is stored."""

import pytest
from django import forms
from django.contrib import admin
from django.core.cache import cache
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, RequestFactory
from rest_framework.test import APIClient

from contacts.imports.models import ContactImport
from contacts.intake.models import Chatflow, Form, FormSubmission
from contacts.intake.services import chatflow_save, connected_app_create
from contacts.models import Contact
from contacts.status.models import StatusChange
from crm.inputs import (
    JSON_MAX_DEPTH,
    JSONInputError,
    JSONInputFormMixin,
    json_input_loads,
)
from tests.factories import ContactFactory, UserFactory
from workflows.models import Workflow

TOO_DEEP = f"JSON nested deeper than {JSON_MAX_DEPTH} levels."
NUL_TEXT = "must not contain the NUL character"
LEADS = {
    "filterGroups": [
        {"filters": [{"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"}]}
    ]
}


def nested(levels: int, inner="1") -> str:
    """`levels` arrays inside each other: "[[[1]]]" is 3 levels."""
    return "[" * levels + inner + "]" * levels


# ~1,000 levels in 2 KB: deep enough to exhaust Python's recursion limit when parsed.
BOMB = nested(1_000)


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def root(db):
    return UserFactory(username="root", is_superuser=True, is_staff=True)


@pytest.fixture
def api(root):
    client = APIClient()
    client.force_authenticate(root)
    return client


@pytest.fixture
def admin_client(root):
    client = Client()
    client.force_login(root)
    return client


def post_json(client, url, text):
    return client.post(url, text, content_type="application/json")


# --- the rule ------------------------------------------------------------------------


def test_the_limit_is_exact_and_a_bomb_is_refused_without_recursing():
    assert json_input_loads(nested(JSON_MAX_DEPTH)) is not None
    deepest_object = '{"a":' * JSON_MAX_DEPTH + "1" + "}" * JSON_MAX_DEPTH
    assert json_input_loads(deepest_object) is not None

    for text in (nested(JSON_MAX_DEPTH + 1), '{"a":' * 65 + "1" + "}" * 65, BOMB, nested(50_000)):
        with pytest.raises(JSONInputError, match=TOO_DEEP):
            json_input_loads(text)


def test_a_nul_is_refused_naming_its_place_and_an_escaped_backslash_is_not_a_nul():
    with pytest.raises(JSONInputError, match=r"^events\[1\]\.properties\.k must not"):
        json_input_loads('{"events": [{}, {"properties": {"k": "v\\u0000"}}]}')
    with pytest.raises(JSONInputError, match=r"^'a\\x00' must not"):
        json_input_loads('{"a\\u0000": 1}')

    assert json_input_loads('{"path": "C:\\\\u0000"}') == {"path": "C:\\u0000"}


# --- the API: JSON bodies ----------------------------------------------------------------


def test_the_anonymous_external_form_refuses_a_json_bomb_and_stores_nothing(account):
    body = '{"form_id": "f", "fields": {"email": "a@example.com", "first_name": ' + BOMB + "}}"

    response = post_json(APIClient(), "/api/intake/external-forms/", body)

    assert response.status_code == 400
    assert response.json() == {"detail": TOO_DEEP}
    assert not Contact.objects.exists()
    assert not FormSubmission.objects.exists()


def test_the_chatflow_refuses_a_json_bomb(account):
    chatflow = chatflow_save(chatflow=Chatflow(name="Pricing bot"))

    response = post_json(
        APIClient(), f"/api/intake/chatflows/{chatflow.pk}/", '{"email": ' + BOMB + "}"
    )

    assert (response.status_code, response.json()) == (400, {"detail": TOO_DEEP})
    assert not Contact.objects.exists()


def test_the_workflows_api_refuses_a_json_bomb_as_json_and_reads_no_form(account, api):
    as_json = post_json(api, "/api/workflows/", '{"name": "w", "criteria": ' + BOMB + "}")
    # The API reads JSON only: a form body is not parsed at all.
    as_form = api.post("/api/workflows/", {"name": "w", "criteria": BOMB}, format="multipart")

    assert (as_json.status_code, as_json.json()) == (400, {"detail": TOO_DEEP})
    assert as_form.status_code == 415
    assert not Workflow.objects.exists()


def test_the_bulk_status_change_refuses_a_json_bomb_and_changes_nothing(account, api):
    ContactFactory(lifecycle_stage="lead")

    response = post_json(
        api, "/api/contacts/marketing-status/", '{"status": "marketing", "filter": ' + BOMB + "}"
    )

    assert (response.status_code, response.json()) == (400, {"detail": TOO_DEEP})
    assert not StatusChange.objects.exists()


def test_the_import_mapping_sent_as_a_form_field_is_checked_too(account, api):
    upload = SimpleUploadedFile("c.csv", b"Email\na@example.com\n", "text/csv")

    response = api.post("/api/imports/", {"file": upload, "mapping": BOMB}, format="multipart")

    assert (response.status_code, response.json()) == (400, {"mapping": [TOO_DEEP]})
    assert not ContactImport.objects.exists()


# --- the API: NUL characters in text -------------------------------------------------------


def test_a_nul_in_a_contact_field_is_a_400_as_json_and_as_a_form(account, api):
    as_json = api.post(
        "/api/contacts/", {"email": "n@example.com", "first_name": "A\x00"}, format="json"
    )
    as_form = api.post("/api/contacts/", {"email": "n@example.com", "company": "A\x00"})

    assert as_json.status_code == as_form.status_code == 400
    assert as_json.json() == {"detail": f"first_name {NUL_TEXT} (\\u0000)."}
    assert as_form.json() == {"detail": f"company {NUL_TEXT} (\\u0000)."}
    assert not Contact.objects.exists()


def test_a_nul_in_public_intake_is_a_400_and_stores_nothing(account):
    chatflow = chatflow_save(chatflow=Chatflow(name="Pricing bot"))
    client = APIClient()

    external = client.post(
        "/api/intake/external-forms/",
        {"form_id": "f", "fields": {"email": "a@example.com", "first_name": "Ev\x00e"}},
        format="json",
    )
    chat = client.post(
        f"/api/intake/chatflows/{chatflow.pk}/",
        {"email": "b@example.com", "conversation_id": "c\x00"},
        format="json",
    )

    assert (external.status_code, chat.status_code) == (400, 400)
    assert NUL_TEXT in external.json()["detail"] and NUL_TEXT in chat.json()["detail"]
    assert not Contact.objects.exists()


def test_a_nul_in_a_connected_app_batch_is_a_400_and_stores_nothing(account):
    app, token = connected_app_create(name="Shop")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    response = client.post(
        f"/api/intake/integrations/{app.pk}/contacts/",
        {"contacts": [{"email": "ok@example.com"}, {"email": "x@example.com", "company": "\x00"}]},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {"detail": f"contacts[1].company {NUL_TEXT} (\\u0000)."}
    assert not Contact.objects.exists()


# --- URLs ----------------------------------------------------------------------------------


def test_a_nul_in_a_url_is_a_400_before_any_view_reads_it(account, api, admin_client):
    runs = api.get("/api/workflow-runs/", {"status": "done\x00"})
    unsubscribe = Client().get("/unsubscribe/abc%00def/")
    changelist = admin_client.get("/admin/contacts/contact/", {"q": "a\x00"})

    assert (runs.status_code, runs.json()) == (400, {"detail": f"The URL {NUL_TEXT} (\\u0000)."})
    assert unsubscribe.status_code == changelist.status_code == 400


# --- the admin -----------------------------------------------------------------------------


def test_the_criteria_tester_shows_a_json_bomb_as_a_form_error(admin_client):
    response = admin_client.post("/admin/workflows/criteria-tester/", {"raw": BOMB})

    assert response.status_code == 200
    assert response.context["form"].errors["raw"] == [TOO_DEEP]


@pytest.mark.parametrize(
    ("fields", "message"),
    [(BOMB, TOO_DEEP), ('[{"name": "company\\u0000"}]', f"[0].name {NUL_TEXT} (\\u0000).")],
)
def test_an_admin_json_field_refuses_a_bomb_and_a_nul_and_stores_nothing(
    account, admin_client, fields, message
):
    response = admin_client.post(
        "/admin/contacts/form/add/",
        {
            "name": "Newsletter",
            "slug": "newsletter",
            "fields": fields,
            "success_message": "Thanks",
            "is_active": "on",
        },
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["fields"] == [message]
    assert not Form.objects.exists()


def test_the_workflow_editor_refuses_a_bomb_in_its_criteria(account, admin_client):
    response = admin_client.post(
        "/admin/workflows/workflow/add/",
        {"name": "w", "purpose": "other", "criteria": BOMB, "actions": "[]"},
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["criteria"] == [TOO_DEEP]
    assert not Workflow.objects.exists()


def test_every_json_field_of_every_admin_form_has_the_input_rules(root):
    request = RequestFactory().get("/admin/")
    request.user = root
    json_fields, unchecked = [], []
    for model, model_admin in admin.site._registry.items():
        if not (
            model_admin.has_add_permission(request) or model_admin.has_change_permission(request)
        ):
            continue  # read-only: no form is ever submitted
        for name, field in model_admin.get_form(request).base_fields.items():
            if isinstance(field, forms.JSONField):
                json_fields.append(f"{model._meta.label}.{name}")
                if not isinstance(field, JSONInputFormMixin):
                    unchecked.append(f"{model._meta.label}.{name}")

    assert {"contacts.Form.fields", "workflows.Workflow.criteria"} <= set(json_fields)
    assert unchecked == []
