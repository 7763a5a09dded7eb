"""The contacts flows in a real browser, over demo data: logging in to the home page's
figures, the list's filters and search, the status button and the bulk status change."""

import threading

from django.db.models import Q
from django.utils import timezone

from billing.money import format_money
from billing.selectors import billing_usage
from contacts.models import Contact, LifecycleStage
from contacts.status import bulk
from contacts.status.models import BulkJobStatus, BulkStatusJob, StatusChange
from contacts.status.results import SET_MARKETING, SET_NON_MARKETING, StatusSource
from contacts.status.selectors import usage_current
from contacts.status.services import contacts_delete, contacts_status_preview
from crm.admin import BigTableAdmin
from tests.e2e.flows import (
    click_status_button,
    confirm_bulk_status,
    confirm_status_change,
    count_text,
    house_day,
    open_status_confirmation,
    result_rows,
    run_bulk_action,
    shows_day,
    status_button_operation,
    wait_for_bulk_job,
)

CONTACTS = "/admin/contacts/contact/"
PAGE = BigTableAdmin.list_per_page  # rows on a page of the contacts list


def test_logging_in_opens_on_this_periods_figures(page, login, demo, shot, live_server):
    # One marketing contact deleted: the live count drops, the period's peak does not.
    now = timezone.now()
    contacts_delete(
        contacts=Contact.objects.billable(now).order_by("pk")[:1].get(),
        source=StatusSource("manual", name="browser test"),
    )
    usage = billing_usage(at=timezone.now())
    assert usage["live_count"] == usage["peak_count"] - 1

    login(username="ops", groups=["Marketing ops"], before_submit=lambda: shot("login"))
    assert page.url == f"{live_server.url}/admin/"
    shot("home")

    panel = page.locator("#home-billing")
    values = panel.locator(".home-figure .value").all_inner_texts()
    assert values[:4] == [
        count_text(usage["live_count"]),
        count_text(usage["peak_count"]),
        count_text(usage["headroom"]),
        format_money(usage["estimate"]["total"], usage["currency"]),
    ]
    # The tier is beside the peak; the forecast beside the estimate.
    figures = panel.locator(".home-figure")
    assert count_text(usage["included_contacts"]) in figures.nth(1).inner_text()
    forecast = format_money(usage["forecast"]["total"], usage["currency"])
    assert forecast in figures.nth(3).inner_text()
    assert shows_day(figures.nth(4).inner_text(), usage["next_update_date"])

    with page.expect_navigation():
        panel.locator("a[href$='/admin/billing/dashboard/']").first.click()
    assert page.url == f"{live_server.url}/admin/billing/dashboard/"


def test_the_contacts_list_filters_searches_and_shows_pending_dates(page, login, demo, shot):
    now = timezone.now()
    pending_leads = Contact.objects.pending_downgrade(now).filter(
        lifecycle_stage=LifecycleStage.LEAD
    )
    expected = pending_leads.count()
    assert expected >= 1, "the demo data should give pending leads"
    on_page = min(expected, PAGE)
    goto = login(username="ops", groups=["Marketing ops"])
    goto(CONTACTS)
    shot("list")
    assert result_rows(page).count() == PAGE  # a full first page of the demo contacts

    # The filters carry the API's names.
    with page.expect_navigation():
        page.click("#changelist-filter a[href*='pending=true']")
    with page.expect_navigation():
        page.click("#changelist-filter a[href*='lifecycle_stage=lead']")
    shot("pending-leads")
    assert "pending=true" in page.url and "lifecycle_stage=lead" in page.url
    rows = result_rows(page)
    assert rows.count() == on_page
    # The status and its pending date share one column.
    next_update = usage_current().next_update
    status_column = page.locator("#result_list tbody td.field-status_column")
    assert status_column.count() == on_page
    assert all(shows_day(text, next_update) for text in status_column.all_inner_texts())
    # The company is under the name.
    names = page.locator("#result_list tbody td.field-name_display").all_inner_texts()
    companies = [c.company for c in pending_leads.order_by("-pk")[:PAGE] if c.company]
    assert companies and all(any(company in name for name in names) for company in companies)

    # A link saved with the old names lands on the same list under the new ones.
    goto(f"{CONTACTS}?marketing=pending&lifecycle_stage__exact=lead")
    assert "pending=true" in page.url and "lifecycle_stage=lead" in page.url
    assert "marketing=" not in page.url and "__exact" not in page.url
    assert result_rows(page).count() == on_page

    # A search keeps the filters: the first row's surname, among the pending leads.
    term = pending_leads.order_by("-pk").first().last_name
    page.fill("#searchbar", term)
    with page.expect_navigation():
        page.press("#searchbar", "Enter")
    shot("searched")
    assert "pending=true" in page.url and "q=" in page.url
    matching = pending_leads.filter(
        Q(email__startswith=term.lower())
        | Q(first_name__istartswith=term)
        | Q(last_name__istartswith=term)
        | Q(company__istartswith=term)
    )
    emails = page.locator("#result_list tbody th.field-email, #result_list tbody td.field-email")
    assert sorted(emails.all_inner_texts()) == sorted(matching.values_list("email", flat=True))

    # An address finds its one contact; its page shows the date it stops being marketing.
    contact = matching.first()
    goto(f"{CONTACTS}?q={contact.email}")
    assert result_rows(page).count() == 1
    assert "results" not in page.inner_text("#changelist-search")  # one result, singular
    with page.expect_navigation():
        page.click(f"#result_list a:text-is('{contact.email}')")
    shot("pending-contact")
    assert shows_day(page.inner_text("#marketing-status"), next_update)
    assert status_button_operation(page) == SET_MARKETING  # cancels the pending change


def test_the_status_button_upgrades_schedules_and_cancels(page, login, demo, shot):
    now = timezone.now()
    contact = Contact.objects.not_billable(now).order_by("pk").first()
    ledger = StatusChange.objects.filter(contact_id=contact.pk)
    rows_before = ledger.count()
    live_before = usage_current().live_count
    # A tier at today's count: one more marketing contact is past it, so the button asks
    # to confirm what it adds to this period's invoice.
    demo.included_contacts = live_before
    demo.save()
    cost = contacts_status_preview(contacts=[contact.pk], operation=SET_MARKETING).extra["cost"]
    assert cost["invoice_delta"] > 0
    goto = login(username="ops", groups=["Marketing ops"])
    goto(f"{CONTACTS}{contact.pk}/change/")
    history = page.locator("#status-history tr.ledger-row")
    shot("non-marketing")
    assert status_button_operation(page) == SET_MARKETING
    assert history.count() == rows_before

    open_status_confirmation(page)
    shot("marketing-confirmation")
    assert contact.email in page.inner_text("#confirm-contact")
    assert format_money(cost["invoice_delta"], cost["currency"]) in page.inner_text("#cost-preview")
    assert usage_current().live_count == live_before  # nothing changed yet
    confirm_status_change(page)
    shot("marketing")
    assert page.is_visible(".messagelist .success")
    contact.refresh_from_db()
    assert contact.is_billable(timezone.now())
    assert usage_current().live_count == live_before + 1
    assert status_button_operation(page) == SET_NON_MARKETING
    assert history.count() == rows_before + 1

    # Setting it non-marketing shows the saving from the next period; going back changes
    # nothing.
    open_status_confirmation(page)
    shot("non-marketing-confirmation")
    assert page.is_visible("#saving-preview")
    assert house_day(usage_current().next_update) in page.inner_text("#content-main")
    with page.expect_navigation():
        page.click("#status-confirmation-form a.cancel-link")
    assert page.url.endswith(f"{CONTACTS}{contact.pk}/change/")
    contact.refresh_from_db()
    assert contact.pending_from(timezone.now()) is None
    assert history.count() == rows_before + 1

    open_status_confirmation(page)
    confirm_status_change(page)
    shot("scheduled")
    contact.refresh_from_db()
    usage = usage_current()
    assert contact.pending_from(timezone.now()) == usage.next_update
    assert usage.live_count == live_before + 1  # billable until the next update date
    assert shows_day(page.inner_text("#marketing-status"), usage.next_update)
    assert status_button_operation(page) == SET_MARKETING
    assert history.count() == rows_before + 2

    # Marking it again cancels the pending change at no cost: no confirmation, and the
    # counts do not move.
    peak = usage.peak_count
    click_status_button(page)
    shot("cancelled")
    assert page.is_visible(".messagelist .success")
    contact.refresh_from_db()
    assert contact.pending_from(timezone.now()) is None
    assert (usage_current().live_count, usage_current().peak_count) == (live_before + 1, peak)
    assert status_button_operation(page) == SET_NON_MARKETING
    assert history.count() == rows_before + 3


def test_a_bulk_change_shows_its_cost_and_asks_for_the_typed_count(
    page, login, demo, shot, settings
):
    now = timezone.now()
    filters = "marketing_status=non_marketing&lifecycle_stage=lead&lead_status=new"
    selected = Contact.objects.not_billable(now).filter(lifecycle_stage="lead", lead_status="new")
    count = selected.count()
    assert 2 <= count <= PAGE, "the demo data should give one page of new non-marketing leads"
    # Below the count, and a tier at today's peak: the change needs the typed count and
    # starts an overage block.
    settings.MARKETING_CONFIRM_THRESHOLD = count - 1
    demo.included_contacts = usage_current().peak_count
    demo.save()
    preview = contacts_status_preview(contacts=selected, operation=SET_MARKETING)
    cost = preview.extra["cost"]
    assert preview.would_change == count and cost["invoice_delta"] > 0
    live_before = usage_current().live_count

    goto = login(username="ops", groups=["Marketing ops"])
    goto(f"{CONTACTS}?{filters}")
    shot("filtered")
    assert result_rows(page).count() == count
    run_bulk_action(page, "set_marketing_action")
    shot("confirmation")
    assert page.inner_text("#preview-change td") == count_text(count)
    assert format_money(cost["invoice_delta"], cost["currency"]) in page.inner_text("#cost-preview")
    assert page.is_visible("input[name=confirm_count]")
    # A selection within the job threshold runs in the request, not as a job.
    assert not page.is_visible("#runs-in-background")
    sample = page.locator("#confirmation-sample li").all_inner_texts()
    assert [line.split(" — ")[0] for line in sample] == list(
        selected.order_by("pk").values_list("email", flat=True)[: len(sample)]
    )
    assert len(sample) >= 1

    confirm_bulk_status(page, typed=str(count + 1))
    shot("wrong-count")
    assert page.is_visible("#marketing-confirmation-form .errorlist")
    assert usage_current().live_count == live_before
    assert selected.count() == count  # nothing changed

    confirm_bulk_status(page, typed=count_text(count))
    shot("done")
    assert page.is_visible(".messagelist .success")
    assert page.url.endswith(f"{CONTACTS}?{filters}")
    assert not BulkStatusJob.objects.exists()
    assert usage_current().live_count == live_before + count
    assert (
        not Contact.objects.not_billable(timezone.now())
        .filter(lifecycle_stage="lead", lead_status="new")
        .exists()
    )


def test_all_matching_a_filtered_list_runs_as_a_job_watched_to_its_end(
    page, login, demo, shot, settings, monkeypatch
):
    now = timezone.now()
    # The marketing contacts with no pending change: more than one page, so "all N
    # matching" is more than the page's selection.
    matching = Contact.objects.billable(now).exclude(
        pk__in=Contact.objects.pending_downgrade(now).values("pk")
    )
    count = matching.count()
    assert count > PAGE, "the demo data should give more than a page of them"
    ids = set(matching.values_list("pk", flat=True))
    filters = "marketing_status=marketing&pending=false"
    settings.MARKETING_CONFIRM_THRESHOLD = count - 1
    preview = contacts_status_preview(contacts=matching, operation=SET_NON_MARKETING)
    assert preview.would_schedule == count
    live_before = usage_current().live_count

    # The job runs in a thread, as in the embedded default, and waits until the test has
    # seen its progress page: the page must poll and show the result when it ends.
    settings.EMBEDDED_BACKGROUND_JOBS = True
    release = threading.Event()
    run = bulk.bulk_status_job_run

    def run_when_released(**kwargs):
        release.wait(timeout=30)
        return run(**kwargs)

    monkeypatch.setattr(bulk, "bulk_status_job_run", run_when_released)

    goto = login(username="ops", groups=["Marketing ops"])
    goto(f"{CONTACTS}?{filters}")
    shot("filtered")
    assert result_rows(page).count() == PAGE
    run_bulk_action(page, "set_non_marketing_action", all_matching=True)
    shot("confirmation")
    assert page.inner_text("#preview-schedule td") == count_text(count)
    assert page.is_visible("#saving-preview")
    assert page.is_visible("#runs-in-background")
    assert page.locator("#confirmation-sample li").count() >= 1

    confirm_bulk_status(page, typed=str(count - 1))
    shot("wrong-count")
    assert page.is_visible("#marketing-confirmation-form .errorlist")
    assert not BulkStatusJob.objects.exists()

    confirm_bulk_status(page, typed=count_text(count))
    job = BulkStatusJob.objects.get()
    assert page.url.endswith(f"/admin/contacts/bulkstatusjob/{job.pk}/change/")
    assert page.get_attribute("#job-progress", "data-running") == "1"
    assert page.inner_text("#job-total") == count_text(count)
    shot("progress")
    assert not Contact.objects.pending_downgrade(timezone.now()).filter(pk__in=ids).exists()

    # The page polls the job's progress and reloads with the result once it has ended.
    release.set()
    wait_for_bulk_job(page)
    shot("result")
    job.refresh_from_db()
    assert job.status == BulkJobStatus.DONE
    assert (job.total, job.done, job.changed) == (count, count, count)
    assert page.inner_text("#job-done") == count_text(count)
    assert page.inner_text("#job-changed") == count_text(count)
    assert house_day(job.effective_from) in page.inner_text("#job-result")
    pending = Contact.objects.pending_downgrade(timezone.now()).filter(pk__in=ids)
    assert pending.count() == count
    assert usage_current().live_count == live_before  # billable until the next update date
