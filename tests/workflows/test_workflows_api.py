"""Workflows API and admin: CRUD with model permissions, preview, run, runs; the admin pages."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from contacts.intake.models import ConnectedApp
from contacts.intake.services import connected_app_create
from contacts.models import Contact
from contacts.status.models import StatusChange
from tests.factories import ContactFactory, UserFactory
from tests.workflows.wf_helpers import M, exclusion, make_workflow, tree
from workflows.models import Enrollment, Workflow, WorkflowRun

pytestmark = pytest.mark.django_db

WORKFLOWS = "/api/workflows/"
MQL = {
    "filterGroups": [
        {"filters": [{"propertyName": "lifecyclestage", "operator": "EQ", "value": "mql"}]}
    ]
}


@pytest.fixture
def ops(db):
    return UserFactory(username="ops", groups=["Marketing ops"])


@pytest.fixture
def auditor(db):
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.get_or_create(name="Auditor")
    group.permissions.add(
        *Permission.objects.filter(
            content_type__app_label="workflows", codename__startswith="view_"
        )
    )
    return UserFactory(username="auditor", groups=["Auditor"])


def api(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_marketing_ops_create_preview_and_run_a_workflow(
    account, ops, django_capture_on_commit_callbacks
):
    ContactFactory(email="a@x.com", lifecycle_stage="mql")
    created = api(ops).post(
        WORKFLOWS,
        {
            "name": "MQLs",
            "purpose": "enrollment",
            "enabled": True,
            "criteria": MQL,
            "actions": [{"type": "set_marketing"}],
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    pk = created.json()["id"]

    preview = api(ops).post(f"{WORKFLOWS}{pk}/preview/")
    assert preview.status_code == 200
    body = preview.json()
    assert (body["matched"], body["would_enroll"], body["would_become_marketing"]) == (1, 1, 1)
    assert body["sample"][0]["email"] == "a@x.com"
    assert "invoice_delta" in body["cost"]
    assert not StatusChange.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        ran = api(ops).post(f"{WORKFLOWS}{pk}/run/", {"idempotency_key": "k1"}, format="json")
    assert ran.status_code == 202
    run = WorkflowRun.objects.get()
    assert (run.trigger, run.status, run.changed, run.requested_by) == ("api", "done", 1, ops)
    # A retry with the same key answers the same run
    again = api(ops).post(f"{WORKFLOWS}{pk}/run/", {"idempotency_key": "k1"}, format="json")
    assert again.json()["id"] == run.pk and WorkflowRun.objects.count() == 1

    runs = api(ops).get(f"/api/workflow-runs/?workflow={pk}")
    assert [r["id"] for r in runs.json()["results"]] == [run.pk]
    assert Contact.objects.get().marketing_status == M


def test_bad_criteria_and_actions_are_a_400_naming_the_place(ops):
    bad = api(ops).post(
        WORKFLOWS,
        {
            "name": "Bad",
            "criteria": tree(("lifecycle_stage", "EQ", "nope")),
            "actions": [{"type": "explode"}],
        },
        format="json",
    )
    assert bad.status_code == 400
    errors = bad.json()
    assert errors["criteria"][0]["code"] == "bad_value"
    assert "explode" in errors["actions"][0]
    assert not Workflow.objects.exists()


def test_an_auditor_reads_but_cannot_change_or_run(account, auditor):
    workflow = make_workflow()
    ContactFactory(lifecycle_stage="mql")
    assert api(auditor).get(WORKFLOWS).status_code == 200
    assert (
        api(auditor)
        .patch(f"{WORKFLOWS}{workflow.pk}/", {"enabled": False}, format="json")
        .status_code
        == 403
    )
    assert api(auditor).post(f"{WORKFLOWS}{workflow.pk}/run/").status_code == 403
    assert api(auditor).post(f"{WORKFLOWS}{workflow.pk}/preview/").status_code == 403
    assert not WorkflowRun.objects.exists() and not Enrollment.objects.exists()
    assert Workflow.objects.get().enabled is True


def test_anonymous_gets_401(db):
    assert APIClient().get(WORKFLOWS).status_code == 401


# --- admin ---


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_definition_page_lists_status_workflows_and_warns_about_overlaps(account, ops):
    ContactFactory(email="both@x.com", lifecycle_stage="mql", unsubscribed=True)
    ContactFactory(email="mql@x.com", lifecycle_stage="mql")
    make_workflow("MQL definition")
    exclusion("Unsubscribed out", criteria=tree(("unsubscribed", "EQ", True)))
    make_workflow(
        "Tagger",
        actions=[{"type": "set_property", "field": "lead_status", "value": "open"}],
        purpose="other",
    )

    page = admin_client(ops).get("/admin/workflows/workflow/definition/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "lifecycle stage is any of mql" in html
    assert "Tagger" not in html
    assert "1 contact match both “MQL definition” (makes marketing) and “Unsubscribed out”" in html
    assert "the exclusion wins" in html


def test_admin_preview_and_run_buttons(account, ops, django_capture_on_commit_callbacks):
    ContactFactory(email="a@x.com", lifecycle_stage="mql")
    workflow = make_workflow()
    client = admin_client(ops)
    change = client.get(f"/admin/workflows/workflow/{workflow.pk}/change/")
    assert change.status_code == 200
    assert f"/admin/workflows/workflow/{workflow.pk}/preview/" in change.content.decode()

    preview = client.get(f"/admin/workflows/workflow/{workflow.pk}/preview/")
    assert preview.status_code == 200
    assert 'id="pv-enroll">1<' in preview.content.decode()
    assert not StatusChange.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        ran = client.post(f"/admin/workflows/workflow/{workflow.pk}/run/")
    run = WorkflowRun.objects.get()
    assert ran.status_code == 302 and ran.url.endswith(f"/workflowrun/{run.pk}/change/")
    assert (run.trigger, run.status, run.changed) == ("manual", "done", 1)


def test_an_auditor_cannot_run_from_the_admin(account, auditor):
    workflow = make_workflow()
    response = admin_client(auditor).post(f"/admin/workflows/workflow/{workflow.pk}/run/")
    assert response.status_code == 403
    assert not WorkflowRun.objects.exists()


def test_the_two_way_sync_template_prefills_the_source_filter_and_action(account, ops):
    app, _ = connected_app_create(name="Shop", marketing=False)
    ConnectedApp.objects.filter(pk=app.pk).update(two_way_sync=True)

    response = admin_client(ops).post(
        "/admin/workflows/workflow/from-two-way-sync/", {"app": app.pk}
    )

    workflow = Workflow.objects.get()
    assert response.status_code == 302
    assert workflow.criteria["filterGroups"][0]["filters"] == [
        {"propertyName": "source_integration", "operator": "EQ", "value": app.pk}
    ]
    assert (workflow.actions, workflow.enabled, workflow.purpose) == (
        [{"type": "set_marketing"}],
        False,
        "enrollment",
    )


def test_the_admin_saves_a_workflow_from_the_editors(account, ops):
    import json

    response = admin_client(ops).post(
        "/admin/workflows/workflow/add/",
        {
            "name": "From the admin",
            "description": "",
            "purpose": "enrollment",
            "criteria": json.dumps(MQL),
            "actions": json.dumps([{"type": "set_marketing", "email": None}]),
            "max_new_marketing": 10000,
            "schedule_minutes": "",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    workflow = Workflow.objects.get()
    assert (workflow.actions, workflow.created_by) == ([{"type": "set_marketing"}], ops)


def test_held_runs_are_approved_from_the_run_page(account, ops, django_capture_on_commit_callbacks):
    ContactFactory(lifecycle_stage="mql")
    ContactFactory(lifecycle_stage="mql")
    from workflows.runs import workflow_run_now

    held = workflow_run_now(workflow=make_workflow(max_new_marketing=1))
    assert held.status == "held"
    # Marketing ops cannot decide
    denied = admin_client(ops).post(
        f"/admin/workflows/workflowrun/{held.pk}/decide/", {"decision": "approve"}
    )
    assert denied.status_code == 403
    boss = UserFactory(username="boss", groups=["Billing admin"])
    page = admin_client(boss).get(f"/admin/workflows/workflowrun/{held.pk}/change/")
    assert "Approve and run" in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        admin_client(boss).post(
            f"/admin/workflows/workflowrun/{held.pk}/decide/", {"decision": "approve"}
        )
    held.refresh_from_db()
    assert (held.status, held.changed, held.decided_by) == ("done", 2, boss)
