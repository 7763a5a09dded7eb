"""The criteria editor (a form field) and the admin's criteria tester page."""

import json
import re

import pytest
from django.contrib.auth.models import Permission
from django.contrib.staticfiles import finders
from django.test import Client
from django.urls import reverse

from contacts.criteria.forms import CriteriaForm, criteria_editor_schema
from contacts.models import Contact, Source
from tests.factories import UserFactory

TESTER = reverse("workflows_criteria_tester")
LEADS = {
    "filterGroups": [
        {"filters": [{"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"}]}
    ]
}


def config_of(html: str) -> dict:
    """The django-jsonform widget's configuration, as the page hands it to the editor."""
    (raw,) = re.findall(r'data-django-jsonform="([^"]*)"', html)
    return json.loads(raw.replace("&quot;", '"').replace("&amp;", "&").replace("&#x27;", "'"))


def test_the_form_accepts_a_tree_and_drops_the_keys_the_editor_left_empty():
    submitted = {
        "filterGroups": [
            {
                "filters": [
                    {
                        "propertyName": "lead_score",
                        "operator": "GTE",
                        "value": "10",
                        "highValue": "",
                        "values": [],
                        "eventType": "",
                        "withinDays": "",
                    }
                ]
            }
        ]
    }

    form = CriteriaForm(data={"criteria": json.dumps(submitted)})

    assert form.is_valid(), form.errors
    assert form.cleaned_data["criteria"] == {
        "filterGroups": [
            {"filters": [{"propertyName": "lead_score", "operator": "GTE", "value": "10"}]}
        ]
    }
    assert form.fields["criteria"].criteria.groups[0][0].value == 10


def test_the_form_shows_each_problem_on_the_form_and_inside_the_editor():
    bad = {
        "filterGroups": [
            {"filters": [{"propertyName": "id__in", "operator": "EQ", "value": "1"}]},
            {
                "filters": [
                    {
                        "propertyName": "lead_score",
                        "operator": "BETWEEN",
                        "value": "9",
                        "highValue": "1",
                    }
                ]
            },
        ]
    }

    form = CriteriaForm(data={"criteria": json.dumps(bad)})

    assert not form.is_valid()
    assert form.errors["criteria"][0] == (
        "Group 1, filter 1: there is no field “id__in”; pick one from the list."
    )
    assert form.errors["criteria"][1] == (
        "Group 2, filter 1 (Lead score is between): the low value must not be more than the "
        "high value."
    )
    error_map = config_of(str(form["criteria"]))["errorMap"]
    assert set(error_map) == {
        "filterGroups§0§filters§0§propertyName",
        "filterGroups§1§filters§0§highValue",
    }


def test_the_form_refuses_text_that_is_not_json():
    form = CriteriaForm(data={"criteria": "{not json"})

    assert not form.is_valid()
    assert form.errors["criteria"] == ["Enter a valid JSON."]


def test_the_editor_renders_with_a_schema_built_from_the_whitelist_and_local_assets():
    form = CriteriaForm(initial={"criteria": LEADS})

    html = str(form["criteria"])
    schema = config_of(html)["schema"]
    media = str(form.media)

    filter_schema = schema["properties"]["filterGroups"]["items"]["properties"]["filters"]["items"]
    fields = [c["value"] for c in filter_schema["properties"]["propertyName"]["choices"]]
    assert fields[:3] == ["lifecycle_stage", "lead_status", "contact_type"]
    assert "engagement_count" in fields
    assert "source__kind" not in fields
    operators = [c["value"] for c in filter_schema["properties"]["operator"]["choices"]]
    assert operators[-2:] == ["WITHIN_LAST_DAYS", "NOT_WITHIN_LAST_DAYS"]
    assert json.loads(config_of(html)["data"]) == LEADS
    assert "/static/django_jsonform/react-json-form.js" in media
    assert "http" not in media  # no CDN: the package's own static files
    for asset in re.findall(r"/static/(\S+?)\"", media):
        assert finders.find(asset), asset


@pytest.fixture
def people(db):
    source = Source.objects.create(name="Web form", kind="form")
    Contact.objects.bulk_create(
        Contact(
            email=f"p{i}@example.com",
            lifecycle_stage="lead" if i % 2 else "customer",
            source=source,
        )
        for i in range(30)
    )


def viewer_client(*perms) -> Client:
    user = UserFactory(username="viewer")
    user.user_permissions.set(Permission.objects.filter(codename__in=perms))
    client = Client()
    client.force_login(user)
    return client


def test_the_tester_shows_the_count_and_a_sample_of_twenty(people):
    client = viewer_client("view_contact")

    response = client.post(TESTER, {"criteria": "", "raw": json.dumps(LEADS)})

    assert response.status_code == 200
    html = response.content.decode()
    assert re.search(r'id="criteria-count">15 contacts match', html)
    sample = re.search(r'id="criteria-sample">(.*?)</table>', html, re.S).group(1)
    assert sample.count("<tr><td><a ") == 15
    response = client.post(TESTER, {"criteria": json.dumps({"filterGroups": []}), "raw": ""})
    assert re.search(r'id="criteria-count">0 contacts match', response.content.decode())


def test_the_tester_caps_the_sample_at_twenty(people):
    client = viewer_client("view_contact")
    everyone = {
        "filterGroups": [{"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}]}]
    }

    response = client.post(TESTER, {"criteria": json.dumps(everyone)})

    html = response.content.decode()
    assert re.search(r'id="criteria-count">30 contacts match', html)
    assert html.count('<tr><td><a href="/admin/contacts/contact/') == 20


def test_the_tester_shows_validation_errors(people):
    client = viewer_client("view_contact")
    bad = {
        "filterGroups": [
            {"filters": [{"propertyName": "source__kind", "operator": "EQ", "value": "form"}]}
        ]
    }

    response = client.post(TESTER, {"raw": json.dumps(bad)})

    html = response.content.decode()
    assert response.status_code == 200
    assert "Group 1, filter 1: there is no field “source__kind”; pick one from the list." in html
    assert "criteria-count" not in html


def test_the_tester_renders_the_editor_on_get(db):
    response = viewer_client("view_contact").get(TESTER)

    assert response.status_code == 200
    assert b"data-django-jsonform" in response.content
    assert b"/static/django_jsonform/index.js" in response.content


def test_the_tester_needs_the_contacts_view_permission(people):
    response = viewer_client().post(TESTER, {"raw": json.dumps(LEADS)})

    assert response.status_code == 403


def test_the_tester_needs_a_staff_login(db):
    response = Client().get(TESTER)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_the_editor_offers_plain_field_labels_and_operator_words():
    schema = criteria_editor_schema()
    filter_schema = schema["properties"]["filterGroups"]["items"]["properties"]["filters"]["items"]
    fields = {
        c["value"]: c["title"] for c in filter_schema["properties"]["propertyName"]["choices"]
    }
    operators = {c["value"]: c["title"] for c in filter_schema["properties"]["operator"]["choices"]}

    assert fields["lead_score"] == "Lead score"
    assert operators["EQ"] == "is"
    assert operators["GTE"] == "is at least"
    assert operators["NOT_CONTAINS_TOKEN"] == "does not contain the word"
    assert not any("_" in title for title in (*fields.values(), *operators.values()))


@pytest.mark.parametrize(
    "bad_filter, sentence",
    [
        (
            {"propertyName": "lead_score", "operator": "CONTAINS_TOKEN", "value": "1"},
            "Group 1, filter 1 (Lead score contains the word): Lead score cannot use “contains "
            "the word”; use one of “is”, “is not”, “is any of”, “is none of”, “is less "
            "than”, “is at most”, “is more than”, “is at least”, “is between”.",
        ),
        (
            {"propertyName": "lead_score", "operator": "GTE"},
            "Group 1, filter 1 (Lead score is at least): “is at least” needs a value.",
        ),
        (
            {"propertyName": "email", "operator": "HAS_PROPERTY", "value": "x"},
            "Group 1, filter 1 (Email is known): “is known” takes no value; leave it empty.",
        ),
    ],
)
def test_editor_errors_are_sentences_in_the_editors_words(bad_filter, sentence):
    form = CriteriaForm(
        data={"criteria": json.dumps({"filterGroups": [{"filters": [bad_filter]}]})}
    )

    assert not form.is_valid()
    assert form.errors["criteria"] == [sentence]
