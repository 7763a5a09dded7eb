"""Workflows that change marketing statuses are written and run only by users who may change
statuses: otherwise a workflow would be a way around the status permission."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.test import APIClient

from contacts.models import Contact, MarketingStatus
from tests.factories import ContactFactory, UserFactory
from tests.workflows.wf_helpers import make_workflow, tree
from workflows.models import Workflow, WorkflowRun

pytestmark = pytest.mark.django_db

WORKFLOWS = "/api/workflows/"
LEADS = tree(("lifecycle_stage", "EQ", "lead"))
REFUSAL = "Only users who may change marketing statuses may write or run a workflow"


@pytest.fixture
def editor(db):
    """May add, change, view and run workflows, but not change marketing statuses."""
    user = UserFactory(username="editor", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="workflows",
            codename__in=["add_workflow", "change_workflow", "view_workflow", "run_workflow"],
        )
    )
    return user


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def body(actions):
    return {"name": "Leads", "purpose": "enrollment", "criteria": LEADS, "actions": actions}


def test_without_the_status_permission_a_status_changing_workflow_is_refused_by_the_api(
    account, editor
):
    response = api(editor).post(WORKFLOWS, body([{"type": "set_marketing"}]), format="json")
    assert response.status_code == 403
    assert REFUSAL in response.data["detail"]
    assert not Workflow.objects.exists()


def test_without_the_status_permission_other_actions_are_allowed(account, editor):
    actions = [{"type": "set_property", "field": "lead_status", "value": "open"}]
    response = api(editor).post(WORKFLOWS, body(actions), format="json")
    assert response.status_code == 201, response.data


def test_without_the_status_permission_a_workflow_cannot_gain_a_status_action(account, editor):
    workflow = make_workflow(
        actions=[{"type": "set_property", "field": "lead_status", "value": "open"}]
    )
    response = api(editor).patch(
        f"{WORKFLOWS}{workflow.pk}/", {"actions": [{"type": "set_non_marketing"}]}, format="json"
    )
    assert response.status_code == 403
    workflow.refresh_from_db()
    assert [a["type"] for a in workflow.actions] == ["set_property"]


def test_without_the_status_permission_a_status_changing_workflow_is_not_run(account, editor):
    ContactFactory(lifecycle_stage="lead")
    workflow = make_workflow(criteria=LEADS, actions=[{"type": "set_marketing"}])
    response = api(editor).post(f"{WORKFLOWS}{workflow.pk}/run/", {}, format="json")
    assert response.status_code == 403
    assert REFUSAL in response.data["detail"]
    assert not WorkflowRun.objects.exists()
    assert not Contact.objects.filter(marketing_status=MarketingStatus.MARKETING).exists()

    browser = Client()
    browser.force_login(editor)
    assert browser.post(f"/admin/workflows/workflow/{workflow.pk}/run/").status_code == 403
    assert not WorkflowRun.objects.exists()


def test_without_the_status_permission_the_admin_form_says_why(account, editor):
    browser = Client()
    browser.force_login(editor)
    response = browser.post(
        "/admin/workflows/workflow/add/",
        {
            "name": "Leads",
            "purpose": "enrollment",
            "criteria": '{"filterGroups": [{"filters": [{"propertyName": "lifecycle_stage", '
            '"operator": "EQ", "value": "lead"}]}]}',
            "actions": '[{"type": "set_marketing"}]',
            "re_enrollment": "",
        },
    )
    assert response.status_code == 200
    assert REFUSAL in response.content.decode()
    assert not Workflow.objects.exists()


def test_with_the_status_permission_the_same_workflow_is_saved_and_run(
    account, marketing_ops, django_capture_on_commit_callbacks
):
    ContactFactory(lifecycle_stage="lead")
    with django_capture_on_commit_callbacks(execute=True):
        created = api(marketing_ops).post(
            WORKFLOWS, body([{"type": "set_marketing"}]), format="json"
        )
        assert created.status_code == 201, created.data
        run = api(marketing_ops).post(f"{WORKFLOWS}{created.data['id']}/run/", {}, format="json")
    assert run.status_code == 202
    assert Contact.objects.filter(marketing_status=MarketingStatus.MARKETING).count() == 1
