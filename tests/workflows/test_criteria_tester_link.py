"""The criteria tester is reachable from the workflow pages, opened with a workflow's criteria."""

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import ContactFactory, UserFactory
from tests.workflows.wf_helpers import make_workflow, stage_is
from workflows.admin import criteria_tester_url

pytestmark = pytest.mark.django_db

TESTER = reverse("workflows_criteria_tester")


@pytest.fixture
def ops(db):
    client = Client()
    client.force_login(UserFactory(username="ops", groups=["Marketing ops"]))
    return client


def test_the_change_form_links_to_the_tester_with_this_workflows_criteria(admin_client):
    workflow = make_workflow("SQL definition", criteria=stage_is("sql"))
    page = admin_client.get(reverse("admin:workflows_workflow_change", args=[workflow.pk]))
    link = f"{TESTER}?workflow={workflow.pk}"
    assert criteria_tester_url(workflow) == link
    # Beside the criteria editor, and among the page's tools.
    assert page.content.decode().count(f'href="{link}"') == 2


def test_the_changelist_links_to_the_tester_and_each_row_to_its_criteria(admin_client):
    first = make_workflow("MQL definition")
    second = make_workflow("SQL definition", criteria=stage_is("sql"))
    page = admin_client.get(reverse("admin:workflows_workflow_changelist")).content.decode()
    assert f'href="{TESTER}"' in page
    for workflow in (first, second):
        assert f'href="{TESTER}?workflow={workflow.pk}"' in page


def test_the_add_form_links_to_the_empty_tester(admin_client):
    page = admin_client.get(reverse("admin:workflows_workflow_add")).content.decode()
    assert f'href="{TESTER}"' in page


def test_the_tester_opens_with_the_workflows_criteria_and_their_result(ops):
    ContactFactory(email="sql@example.com", lifecycle_stage="sql")
    ContactFactory(email="mql@example.com", lifecycle_stage="mql")
    workflow = make_workflow("SQL definition", criteria=stage_is("sql"))

    response = ops.get(criteria_tester_url(workflow))

    assert response.status_code == 200
    assert response.context["workflow"] == workflow
    assert response.context["form"].initial["criteria"] == workflow.criteria
    result = response.context["preview"]["result"]
    assert result.count == 1
    assert [c.email for c in result.sample] == ["sql@example.com"]
    assert "SQL definition" in response.content.decode()


def test_an_unknown_or_malformed_workflow_is_a_404(ops):
    assert ops.get(f"{TESTER}?workflow=999999").status_code == 404
    assert ops.get(f"{TESTER}?workflow=abc").status_code == 404


def test_a_user_who_cannot_view_workflows_cannot_open_their_criteria(db):
    from django.contrib.auth.models import Permission

    workflow = make_workflow("SQL definition", criteria=stage_is("sql"))
    user = UserFactory(username="reader")
    user.user_permissions.add(
        Permission.objects.get(codename="view_contact", content_type__app_label="contacts")
    )
    client = Client()
    client.force_login(user)
    assert client.get(TESTER).status_code == 200
    assert client.get(criteria_tester_url(workflow)).status_code == 403
