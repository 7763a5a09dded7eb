"""Workflows are created, edited and saved again in the admin, whatever their actions."""

import json

import pytest
from django.test import Client

from contacts.outreach.models import AdAudience
from contacts.outreach.services import marketing_email_create
from tests.factories import UserFactory
from tests.workflows.wf_helpers import make_workflow, stage_is
from workflows.models import Workflow

pytestmark = pytest.mark.django_db

BLANK_INPUTS = {"email": None, "audience": None, "field": "", "value": ""}


@pytest.fixture
def ops(db):
    client = Client()
    client.force_login(UserFactory(username="ops", groups=["Marketing ops"]))
    return client


def from_editor(*actions: dict) -> str:
    """What the actions editor posts: every input of every action, blank where unused."""
    return json.dumps([{**BLANK_INPUTS, **action} for action in actions])


def form_data(name: str, actions: str, purpose="other") -> dict:
    return {
        "name": name,
        "description": "",
        "purpose": purpose,
        "criteria": json.dumps(stage_is("mql")),
        "actions": actions,
        "re_enrollment": "",
        "max_new_marketing": 10000,
        "schedule_minutes": "",
    }


def errors_of(response) -> object:
    return response.context["adminform"].form.errors if response.context else None


@pytest.fixture
def targets(db):
    email = marketing_email_create(
        name="Welcome",
        subject="Hi",
        body="Hello {unsubscribe_url}",
        audience_filter={"lifecycle_stage": "mql"},
    )
    audience = AdAudience.objects.create(name="Lookalikes", platform="google")
    return email.pk, audience.pk


def every_kind_of_action(email: int, audience: int) -> list[tuple[str, dict, list[dict]]]:
    return [
        ("Set marketing", {"type": "set_marketing"}, [{"type": "set_marketing"}]),
        ("Set non-marketing", {"type": "set_non_marketing"}, [{"type": "set_non_marketing"}]),
        (
            "Send",
            {"type": "send_marketing_email", "email": email},
            [{"type": "send_marketing_email", "email": email}],
        ),
        (
            "Audience in",
            {"type": "add_to_ad_audience", "audience": audience},
            [{"type": "add_to_ad_audience", "audience": audience}],
        ),
        (
            "Audience out",
            {"type": "remove_from_ad_audience", "audience": audience},
            [{"type": "remove_from_ad_audience", "audience": audience}],
        ),
        (
            "Stage",
            {"type": "set_property", "field": "lifecycle_stage", "value": "sql"},
            [{"type": "set_property", "field": "lifecycle_stage", "value": "sql"}],
        ),
        (
            "Clear lead status",
            {"type": "set_property", "field": "lead_status", "value": ""},
            [{"type": "set_property", "field": "lead_status", "value": ""}],
        ),
    ]


def test_every_kind_of_workflow_is_created_from_the_editor(ops, targets):
    for name, action, stored in every_kind_of_action(*targets):
        response = ops.post("/admin/workflows/workflow/add/", form_data(name, from_editor(action)))

        assert response.status_code == 302, (name, errors_of(response))
        assert Workflow.objects.get(name=name).actions == stored


def test_a_property_picked_for_an_action_that_takes_none_is_ignored(ops):
    action = {"type": "set_marketing", "field": "lifecycle_stage", "value": "lead"}

    response = ops.post(
        "/admin/workflows/workflow/add/",
        form_data("Lead score 80+", from_editor(action), purpose="enrollment"),
    )

    assert response.status_code == 302, errors_of(response)
    assert Workflow.objects.get().actions == [{"type": "set_marketing"}]


@pytest.mark.parametrize(
    "actions",
    [
        [{"type": "set_marketing"}],
        [{"type": "set_property", "field": "lead_status", "value": "open"}],
    ],
)
def test_a_workflow_made_elsewhere_saves_again_untouched(ops, actions):
    workflow = make_workflow(actions=actions, purpose="other")
    page = ops.get(f"/admin/workflows/workflow/{workflow.pk}/change/")
    assert page.status_code == 200

    response = ops.post(
        f"/admin/workflows/workflow/{workflow.pk}/change/",
        form_data(workflow.name, from_editor(*workflow.actions)),
    )

    assert response.status_code == 302, errors_of(response)
    workflow.refresh_from_db()
    assert workflow.actions == actions


def test_a_missing_input_is_named_in_a_sentence(ops):
    response = ops.post(
        "/admin/workflows/workflow/add/",
        form_data("No email", from_editor({"type": "send_marketing_email"})),
    )

    assert response.status_code == 200
    assert errors_of(response)["actions"] == ["Action 1 (send_marketing_email) needs email."]
    assert not Workflow.objects.exists()
