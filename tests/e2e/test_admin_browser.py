"""Flows of the admin that depend on its JavaScript, checked in a real browser."""

import json

from contacts.models import Contact
from tests.factories import ContactFactory
from workflows.models import Workflow


def test_the_status_button_asks_before_discarding_an_edit(page, login, shot):
    contact = ContactFactory(first_name="Ann")
    goto = login(username="root", is_superuser=True)
    goto(f"/admin/contacts/contact/{contact.pk}/change/")
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    page.fill("#id_first_name", "Anna")
    page.click("#marketing-status-form button")
    shot("edit-kept")

    assert dialogs and dialogs[0].startswith("You have unsaved changes to this contact.")
    assert page.input_value("#id_first_name") == "Anna"
    contact.refresh_from_db()
    assert (contact.first_name, contact.marketing_status) == ("Ann", "non_marketing")


def test_the_status_button_changes_an_unedited_contact_at_once(page, login, shot):
    contact = ContactFactory()
    goto = login(username="root", is_superuser=True)
    goto(f"/admin/contacts/contact/{contact.pk}/change/")
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))

    page.click("#marketing-status-form button")
    page.wait_for_selector(".messagelist")
    shot("changed")

    assert dialogs == []
    assert Contact.objects.get(pk=contact.pk).marketing_status == "marketing"


def test_a_workflow_is_made_in_the_editors_and_saved_again(page, login, shot):
    goto = login(username="ops", groups=["Marketing ops"])
    goto("/admin/workflows/workflow/add/")

    page.fill("#id_name", "Lead score 80+")
    page.select_option("#id_purpose", "enrollment")
    # The criteria editor keeps its JSON in a hidden input; typing the tree there is what
    # the editor's own "filter" rows produce.
    criteria = {
        "filterGroups": [
            {"filters": [{"propertyName": "lead_score", "operator": "GTE", "value": 80}]}
        ]
    }
    page.evaluate(
        "value => { document.querySelector('[name=criteria]').value = value; }",
        json.dumps(criteria),
    )
    actions = page.locator(".field-actions")
    actions.locator("button", has_text="Add item").click()
    actions.locator("select").first.select_option(label="Set as marketing contact")
    shot("filled")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    shot("saved")

    workflow = Workflow.objects.get(name="Lead score 80+")
    assert workflow.actions == [{"type": "set_marketing"}]
    assert workflow.criteria["filterGroups"][0]["filters"][0]["propertyName"] == "lead_score"

    goto(f"/admin/workflows/workflow/{workflow.pk}/change/")
    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist .success")
    shot("saved-again")
    workflow.refresh_from_db()
    assert workflow.actions == [{"type": "set_marketing"}]


def test_the_watch_records_what_goes_wrong_in_the_page(page, login, browser_problems, shot):
    """The shared watch (conftest) sees a console error, an uncaught exception and a 4xx
    of the page's own request; an answer the test declared expected is not a problem."""
    goto = login(username="root", is_superuser=True)
    browser_problems.expect(404, "/admin/an-expected-missing-page/")
    goto("/admin/an-expected-missing-page/")
    assert browser_problems.problems == []

    goto("/admin/no-such-page/")
    page.evaluate("console.error('a console error')")
    page.evaluate("setTimeout(() => { throw new Error('an uncaught error'); })")
    page.wait_for_timeout(100)  # the exception is thrown after evaluate returns
    shot("not-found")
    found = list(browser_problems.problems)
    browser_problems.problems.clear()  # seen: this test must not fail on them

    assert any(p.startswith("404 for GET /admin/no-such-page/") for p in found)
    assert any("console error: a console error" in p for p in found)
    assert any("an uncaught error" in p for p in found)
