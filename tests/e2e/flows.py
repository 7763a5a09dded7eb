"""Steps several browser tests share, in one place so that a change of the admin's flow
(another confirmation step, a background job) is one edit here.

They assert on what is stable — element ids, counts, URLs — rather than on wording.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone


def day_renderings(instant: dt.datetime) -> list[str]:
    """The ways a page may write the day of `instant` (in the active time zone): the
    admin's "1 January 2027" and "1 Jan 2027", ISO, and the US orders."""
    day = timezone.localtime(instant).date()
    return [
        f"{day.day} {day:%B %Y}",
        f"{day.day} {day:%b %Y}",
        day.isoformat(),
        f"{day:%B} {day.day}, {day.year}",
        f"{day:%b} {day.day}, {day.year}",
    ]


def shows_day(text: str, instant: dt.datetime) -> bool:
    """Whether `text` names the day of `instant`, in any of the formats above."""
    return any(rendering in text for rendering in day_renderings(instant))


def house_day(instant: dt.datetime) -> str:
    """The day of `instant` as the admin writes dates: "2 Nov 2026"."""
    day = timezone.localtime(instant).date()
    return f"{day.day} {day:%b %Y}"


def count_text(value: int) -> str:
    """A count as the pages show it: with thousands separators."""
    return f"{value:,}"


def result_rows(page):
    """The rows of the changelist on screen."""
    return page.locator("#result_list tbody tr")


def click_status_button(page) -> None:
    """Press the status button on a contact's page when the change asks no confirmation
    (it is within the tier, or cancels a pending change): the change is made at once and
    the contact's page comes back with a message."""
    with page.expect_navigation():
        page.click("#marketing-status-form button[name=operation]")
    page.wait_for_selector(".messagelist li")


def open_status_confirmation(page) -> None:
    """Press the status button on a contact's page when the change costs or saves money:
    the confirmation page with the cost (set marketing at or past the tier) or the saving
    (set non-marketing) is shown, and nothing has changed yet."""
    with page.expect_navigation():
        page.click("#marketing-status-form button[name=operation]")
    page.wait_for_selector("#status-confirmation-form")


def confirm_status_change(page) -> None:
    """Confirm on the status confirmation page: back to the contact's page with a message."""
    with page.expect_navigation():
        page.click("#status-confirmation-form input[type=submit]")
    page.wait_for_selector(".messagelist li")


def status_button_operation(page) -> str:
    """The operation the status button on a contact's page would ask for."""
    return page.get_attribute("#marketing-status-form button[name=operation]", "value")


def run_bulk_action(page, action: str, *, all_matching: bool = False) -> None:
    """Select every row on the changelist's page (and, with `all_matching`, every contact
    matching the list: "Select all N") and run `action` (its function name): the
    confirmation page with the preview is shown."""
    page.check("#action-toggle")
    if all_matching:
        page.click("#changelist-form .actions .question a")
        page.wait_for_selector("#changelist-form .actions .all", state="visible")
    page.select_option("select[name=action]", action)
    with page.expect_navigation():
        page.click("button[name=index], #changelist-form button[type=submit]")
    page.wait_for_selector("#marketing-confirmation-form")


def confirm_bulk_status(page, typed: str | None) -> None:
    """Confirm the bulk status change on its confirmation page, typing `typed` into the
    count box when given."""
    if typed is not None:
        page.fill("#marketing-confirmation-form input[name=confirm_count]", typed)
    with page.expect_navigation():
        page.click("#marketing-confirmation-form input[type=submit]")


def wait_for_bulk_job(page, timeout: float = 30_000) -> None:
    """On a bulk status job's page: wait until its progress, polled by the page, says the job
    has ended and the page has reloaded with the result."""
    page.wait_for_selector("#job-progress[data-running='0']", timeout=timeout)


# The criteria editor (django-jsonform's React form, contacts.criteria.forms): its inputs
# are named "rjf§filterGroups§<group>§filters§<filter>§<key>".

_GROUPS_ADD = (
    ".rjf-form-group-inner:has(> .rjf-form-group-title:text-matches('^Groups')) "
    "> button.rjf-add-button"
)
_FILTERS_ADD = (
    ".rjf-form-group-inner:has(> .rjf-form-group-title:text-matches('^Filters')) "
    "> button.rjf-add-button"
)


def criteria_add_group(editor) -> None:
    """Add an OR group (the editor gives it one empty filter)."""
    editor.locator(_GROUPS_ADD).click()


def criteria_add_filter(editor, group: int = 0) -> None:
    """Add an AND filter to `group`."""
    editor.locator(_FILTERS_ADD).nth(group).click()


def criteria_set_filter(
    editor, *, group: int = 0, index: int = 0, field: str, operator: str, value: str
) -> None:
    prefix = f"rjf§filterGroups§{group}§filters§{index}§"
    editor.locator(f"select[name='{prefix}propertyName']").select_option(field)
    editor.locator(f"select[name='{prefix}operator']").select_option(operator)
    editor.locator(f"input[name='{prefix}value']").fill(value)
