"""Workflows in a real browser, over demo data: the criteria editor (create, edit, save
again), the preview, and the criteria tester."""

import json

from django.db.models import Count
from django.utils import timezone

from contacts.criteria.selectors import criteria_preview
from contacts.models import Contact
from tests.e2e.flows import (
    count_text,
    criteria_add_filter,
    criteria_add_group,
    criteria_set_filter,
)
from workflows.models import Workflow
from workflows.services import workflow_preview


def filters_of(workflow: Workflow) -> list[tuple[str, str, str]]:
    workflow.refresh_from_db()
    return [
        (item["propertyName"], item["operator"], str(item["value"]))
        for group in workflow.criteria["filterGroups"]
        for item in group["filters"]
    ]


def save_and_continue(page) -> None:
    with page.expect_navigation():
        page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")


def test_a_workflow_is_built_in_the_editor_changed_saved_again_and_previewed(
    page, login, demo, shot
):
    # Criteria the demo's contacts meet: their most common lifecycle stage among the
    # non-marketing, narrowed to the upper half of its lead scores.
    now = timezone.now()
    candidates = Contact.objects.not_billable(now)
    stage = (
        candidates.values("lifecycle_stage")
        .annotate(n=Count("pk"))
        .order_by("-n", "lifecycle_stage")
        .first()["lifecycle_stage"]
    )
    scores = sorted(
        candidates.filter(lifecycle_stage=stage, lead_score__isnull=False).values_list(
            "lead_score", flat=True
        )
    )
    assert scores, "the demo data should give non-marketing contacts with lead scores"
    score = scores[len(scores) // 2]
    tree = {
        "filterGroups": [
            {
                "filters": [
                    {"propertyName": "lifecycle_stage", "operator": "EQ", "value": stage},
                    {"propertyName": "lead_score", "operator": "GTE", "value": score},
                ]
            }
        ]
    }
    assert criteria_preview(tree=tree, now=now).count > 0

    goto = login(username="ops", groups=["Marketing ops"])
    goto("/admin/workflows/workflow/add/")
    page.fill("#id_name", "Qualified leads")
    page.select_option("#id_purpose", "enrollment")
    editor = page.locator(".field-criteria")
    criteria_add_group(editor)
    criteria_set_filter(editor, field="lifecycle_stage", operator="EQ", value=stage)
    actions = page.locator(".field-actions")
    actions.locator("button", has_text="Add item").click()
    actions.locator("select").first.select_option(label="Set as marketing contact")
    shot("new")
    save_and_continue(page)
    shot("created")

    workflow = Workflow.objects.get(name="Qualified leads")
    assert filters_of(workflow) == [("lifecycle_stage", "EQ", stage)]
    assert workflow.actions == [{"type": "set_marketing"}]
    assert page.url.endswith(f"/admin/workflows/workflow/{workflow.pk}/change/")

    # The editor opens on the saved tree; a second filter narrows it.
    editor = page.locator(".field-criteria")
    assert editor.locator("select[name='rjf§filterGroups§0§filters§0§propertyName']").input_value()
    criteria_add_filter(editor)
    criteria_set_filter(editor, index=1, field="lead_score", operator="GTE", value=str(score))
    shot("edited")
    save_and_continue(page)
    assert filters_of(workflow) == [
        ("lifecycle_stage", "EQ", stage),
        ("lead_score", "GTE", str(score)),
    ]

    # Saved again untouched, it stays as it was.
    saved = (workflow.criteria, workflow.actions)
    save_and_continue(page)
    shot("saved-again")
    workflow.refresh_from_db()
    assert (workflow.criteria, workflow.actions) == saved

    expected = workflow_preview(workflow=workflow)
    assert expected.matched > 0 and expected.would_become_marketing > 0
    with page.expect_navigation():
        page.click(f"a[href$='/admin/workflows/workflow/{workflow.pk}/preview/']")
    shot("preview")
    assert page.inner_text("#pv-matched") == count_text(expected.matched)
    assert page.inner_text("#pv-marketing") == count_text(expected.would_become_marketing)
    assert page.is_visible("#pv-cost")
    sample = page.locator("#workflow-preview-sample tbody tr")
    assert sample.count() == len(expected.sample)
    assert not workflow.enrollments.exists()  # a preview writes nothing


def test_the_criteria_tester_counts_what_a_tree_selects(page, login, demo, shot):
    now = timezone.now()
    goto = login(username="ops", groups=["Marketing ops"])
    goto("/admin/workflows/criteria-tester/")
    shot("empty")

    # Built in the editor.
    editor = page.locator("form .django-jsonform-container")
    criteria_add_group(editor)
    criteria_set_filter(editor, field="lifecycle_stage", operator="EQ", value="mql")
    with page.expect_navigation():
        page.click("input[type=submit]")
    shot("editor-tree")
    tree = {
        "filterGroups": [
            {"filters": [{"propertyName": "lifecycle_stage", "operator": "EQ", "value": "mql"}]}
        ]
    }
    expected = criteria_preview(tree=tree, now=now)
    assert expected.count > 0
    assert page.inner_text("#criteria-count").startswith(count_text(expected.count))
    assert page.locator("#criteria-sample tbody tr").count() == min(expected.count, 20)

    # Pasted as JSON, with HubSpot's property name and an OR of two groups.
    pasted = {
        "filterGroups": [
            {"filters": [{"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"}]},
            {"filters": [{"propertyName": "lead_score", "operator": "GTE", "value": 80}]},
        ]
    }
    page.fill("#id_raw", json.dumps(pasted))
    with page.expect_navigation():
        page.click("input[type=submit]")
    shot("pasted-tree")
    expected = criteria_preview(tree=pasted, now=timezone.now())
    assert page.inner_text("#criteria-count").startswith(count_text(expected.count))

    # A field the whitelist does not have: the form says which, and counts nothing.
    bad = {"filterGroups": [{"filters": [{"propertyName": "shoe_size", "operator": "EQ"}]}]}
    page.fill("#id_raw", json.dumps(bad))
    with page.expect_navigation():
        page.click("input[type=submit]")
    shot("bad-tree")
    assert "shoe_size" in page.inner_text(".errorlist")
    assert not page.is_visible("#criteria-count")


def test_a_run_shared_by_the_workers_says_on_its_page_how_many_ranges_are_done(
    page, login, demo, shot, settings, monkeypatch
):
    from workflows import runs
    from workflows.services import workflow_create

    # Runs shared by the workers, in ranges of 100 ids (the live server runs their tasks)
    settings.WORKFLOW_RUNS_SHARED = True
    monkeypatch.setattr(runs, "WORKFLOW_RANGE_BATCH", 100)
    workflow = workflow_create(
        name="Leads get a lead status",
        purpose="other",
        enabled=True,
        criteria={
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "lifecycle_stage", "operator": "EQ", "value": "lead"}
                    ]
                }
            ]
        },
        actions=[{"type": "set_property", "field": "lead_status", "value": "open"}],
    )
    leads = Contact.objects.filter(lifecycle_stage="lead").count()
    assert leads, "the demo data should have leads"
    goto = login(username="ops", groups=["Marketing ops"])

    goto(f"/admin/workflows/workflow/{workflow.pk}/preview/")
    shot("preview")
    with page.expect_navigation():
        page.click("input[value='Run now']")

    run = workflow.runs.get()
    ranges = run.chunks.count()
    assert ranges > 1
    assert (run.status, run.matched) == ("done", leads)
    page.wait_for_selector("text=Ranges shared by the workers")
    assert f"{ranges} of {ranges} done" in page.inner_text("#content")
    shot("run")
