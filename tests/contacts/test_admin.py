"""The admin, through the test client: every write goes through contacts.services."""

import re
from zoneinfo import ZoneInfo

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing.models import Subscription
from contacts.models import (
    Contact,
    MarketingStatus,
    Source,
)
from contacts.status.models import (
    BulkStatusJob,
    LedgerAction,
    PendingApproval,
    PeriodUsage,
    StatusChange,
    StatusChangeRequest,
)
from contacts.status.results import StatusSource
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from crm.admin import EstimatedCountPaginator
from crm.calendar import BillingCalendar
from crm.models import Account
from tests.factories import ContactFactory, SourceFactory, set_guardrails

CHANGELIST = reverse("admin:contacts_contact_changelist")
ADD = reverse("admin:contacts_contact_add")
M = MarketingStatus.MARKETING
N = MarketingStatus.NON_MARKETING
TEST_SOURCE = StatusSource("manual", name="test")


def change_url(pk) -> str:
    return reverse("admin:contacts_contact_change", args=[pk])


def toggle_url(pk) -> str:
    return reverse("admin:contacts_contact_marketing_status", args=[pk])


def make_marketing(*contacts):
    contacts_set_marketing(contacts=[c.pk for c in contacts], source=TEST_SOURCE)


def make_pending(*contacts):
    make_marketing(*contacts)
    contacts_set_non_marketing(contacts=[c.pk for c in contacts], source=TEST_SOURCE)


def state(contact) -> tuple:
    contact.refresh_from_db()
    return contact.marketing_status, contact.marketing_until


def next_update():
    return BillingCalendar.for_account().next_update(timezone.now())


def day(value) -> str:
    return f"{value.day} {value:%b %Y}"


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def usage() -> tuple[int, int]:
    row = PeriodUsage.objects.get()
    return row.live_count, row.peak_count


def counting_contacts(queries) -> list[str]:
    return [
        q["sql"] for q in queries if "COUNT(" in q["sql"].upper() and "contacts_contact" in q["sql"]
    ]


def results(response) -> set[str]:
    return {c.email for c in response.context["cl"].result_list}


def run_action(client, action, ids, *, query="", select_across=False):
    return client.post(
        CHANGELIST + query,
        {
            "action": action,
            "_selected_action": [str(pk) for pk in ids],
            "select_across": "1" if select_across else "0",
            "index": "0",
        },
    )


def confirm_action(client, action, ids, key, *, query="", select_across=False, count=None):
    data = {
        "action": action,
        "_selected_action": [str(pk) for pk in ids],
        "select_across": "1" if select_across else "0",
        "post": "yes",
        "idempotency_key": key,
    }
    if count is not None:
        data["confirm_count"] = str(count)
    return client.post(CHANGELIST + query, data)


def key_of(response) -> str:
    match = re.search(r'name="idempotency_key" value="([^"]+)"', response.content.decode())
    assert match, "the confirmation page carries an idempotency key"
    return match.group(1)


@pytest.fixture
def people(account):
    """Four contacts: ann non-marketing, bob marketing, cat pending, dan non-marketing customer."""
    form = SourceFactory(name="Website form", kind="form")
    manual = SourceFactory(name="Manual", kind="manual")
    ann = ContactFactory(email="ann@example.com", first_name="Ann", last_name="Lee", source=manual)
    bob = ContactFactory(email="bob@acme.com", first_name="Bob", company="Acme", source=form)
    cat = ContactFactory(email="cat@example.com", first_name="Cat", source=form)
    dan = ContactFactory(
        email="dan@example.com", first_name="Dan", lifecycle_stage="customer", source=manual
    )
    make_marketing(bob)
    make_pending(cat)
    return {"ann": ann, "bob": bob, "cat": cat, "dan": dan}


# --- the changelist ------------------------------------------------------------


def test_changelist_shows_effective_status_and_pending_date(ops_client, people):
    with CaptureQueriesContext(connection) as queries:
        response = ops_client.get(CHANGELIST)
    assert response.status_code == 200
    assert results(response) == {
        "ann@example.com",
        "bob@acme.com",
        "cat@example.com",
        "dan@example.com",
    }
    html = response.content.decode()
    pending = f"Marketing, non-marketing from {day(next_update())}"
    assert html.count(f'<td class="field-status_column">{pending}</td>') == 1
    assert html.count('<td class="field-status_column">Marketing</td>') == 1
    assert html.count('<td class="field-status_column">Non-marketing</td>') == 2
    assert "4 contacts" in html
    # The only count over the contacts table is the paginator's LIMITed one.
    counts = counting_contacts(queries.captured_queries)
    assert len(counts) == 1
    assert "LIMIT 10001" in counts[0]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?marketing_status=marketing", {"bob@acme.com", "cat@example.com"}),
        ("?marketing_status=non_marketing", {"ann@example.com", "dan@example.com"}),
        ("?pending=true", {"cat@example.com"}),
        ("?marketing_status=marketing&pending=false", {"bob@acme.com"}),
        ("?source_kind=form", {"bob@acme.com", "cat@example.com"}),
        ("?lifecycle_stage=customer", {"dan@example.com"}),
        ("?q=ANN", {"ann@example.com"}),
        ("?q=bob@ac", {"bob@acme.com"}),
        ("?q=acme", {"bob@acme.com"}),
        ("?q=lee", {"ann@example.com"}),
        ("?q=example.com", set()),  # prefix search: not a substring search
        ("?marketing_status=marketing&q=cat", {"cat@example.com"}),
    ],
)
def test_changelist_filters_and_search(ops_client, people, query, expected):
    with CaptureQueriesContext(connection) as queries:
        response = ops_client.get(CHANGELIST + query)
    assert response.status_code == 200
    assert results(response) == expected
    counts = counting_contacts(queries.captured_queries)
    assert counts and all("LIMIT 10001" in sql for sql in counts)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("?marketing=marketing", "?marketing_status=marketing"),
        ("?marketing=non_marketing", "?marketing_status=non_marketing"),
        ("?marketing=pending", "?pending=true"),
        ("?marketing=settled&q=cat", "?marketing_status=marketing&pending=false&q=cat"),
        ("?source__kind__exact=form", "?source_kind=form"),
        ("?lifecycle_stage__exact=customer&o=2", "?lifecycle_stage=customer&o=2"),
        ("?lead_status__exact=new", "?lead_status=new"),
        ("?contact_type__exact=partner", "?contact_type=partner"),
    ],
)
def test_the_old_filter_names_redirect_to_the_apis(ops_client, people, old, new):
    """Bookmarks made with the admin's former parameters land on the same selection."""
    response = ops_client.get(CHANGELIST + old)
    assert response.status_code == 302
    assert response["Location"] == CHANGELIST + new
    assert results(ops_client.get(response["Location"])) == results(
        ops_client.get(CHANGELIST + new)
    )


def test_the_admin_and_the_api_filter_by_the_same_names(ops_client, people):
    from contacts.filters import ContactFilter

    changelist = ops_client.get(CHANGELIST).context["cl"]
    admin_names = {
        f.parameter_name for f in changelist.filter_specs if hasattr(f, "parameter_name")
    }
    shared = {"marketing_status", "pending", "source_kind", "lifecycle_stage", "lead_status"}
    assert shared | {"contact_type"} <= admin_names
    assert shared | {"contact_type"} <= set(ContactFilter.base_filters)


def test_changelist_query_count_does_not_grow_with_rows(
    ops_client, people, django_assert_max_num_queries
):
    ContactFactory.create_batch(30, source=people["ann"].source)
    # session, user, account, capped count, two singleton checks (nav), the page,
    # the billing alert banner (one query on every admin page), and the choices of the
    # contact-list and ad-audience filters (one small query each).
    with django_assert_max_num_queries(10):
        response = ops_client.get(CHANGELIST + "?marketing_status=non_marketing")
    assert len(response.context["cl"].result_list) == 32


def test_dates_are_shown_in_the_account_time_zone(ops_client, account):
    """A period starts at local midnight: 1 December in Stockholm is 30 November in UTC."""
    account.time_zone = "Europe/Stockholm"
    account.save()
    contact = ContactFactory(email="sven@example.se")
    make_pending(contact)
    pending = state(contact)[1]
    local = pending.astimezone(ZoneInfo("Europe/Stockholm"))
    assert (local.hour, local.minute) == (0, 0)
    assert day(pending) != day(local)  # the same instant is another day in UTC
    html = ops_client.get(CHANGELIST).content.decode()
    assert f"non-marketing from {day(local)}</td>" in html
    page = ops_client.get(change_url(contact.pk)).content.decode()
    assert f"non-marketing from {day(local)} (billable until then)" in page


def test_filtered_count_is_capped(ops_client, people, monkeypatch):
    monkeypatch.setattr(EstimatedCountPaginator, "count_cap", 2)
    response = ops_client.get(CHANGELIST)
    assert response.context["cl"].result_count == 2
    assert response.context["cl"].paginator.capped is True
    assert "more than 2 contacts" in response.content.decode()


@pytest.mark.postgres
def test_unfiltered_changelist_reads_the_table_estimate_on_postgresql(
    ops_client, people, monkeypatch
):
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE contacts_contact")
    monkeypatch.setattr(EstimatedCountPaginator, "count_cap", 2)
    with CaptureQueriesContext(connection) as queries:
        response = ops_client.get(CHANGELIST)
    assert response.context["cl"].result_count == 4
    assert response.context["cl"].paginator.estimated is True
    assert "about 4 contacts" in response.content.decode()
    assert any("pg_class" in q["sql"] for q in queries.captured_queries)
    assert counting_contacts(queries.captured_queries) == []


def test_delete_selected_is_absent(super_client, people):
    response = super_client.get(CHANGELIST)
    choices = [name for name, _ in response.context["action_form"].fields["action"].choices]
    assert choices == [
        "",
        "set_marketing_action",
        "set_non_marketing_action",
        "export_csv_action",
        "add_to_ad_audience_action",
        "remove_from_ad_audience_action",
        "delete_contacts_action",  # ours, through the status service (not Django's)
        "merge_contacts_action",
    ]
    response = run_action(super_client, "delete_selected", [people["ann"].pk])
    assert Contact.objects.count() == 4
    assert "No action selected." in messages_of(response)


def test_sales_sees_no_status_actions(sales_client, people):
    response = sales_client.get(CHANGELIST)
    assert response.status_code == 200
    # Only the export (it needs the view permission alone).
    choices = [name for name, _ in response.context["action_form"].fields["action"].choices]
    assert choices == ["", "export_csv_action"]


# --- the contact page: status, toggle, ledger ------------------------------------


def test_change_page_shows_status_reason_and_ledger(ops_client, people):
    cat = people["cat"]
    response = ops_client.get(change_url(cat.pk))
    assert response.status_code == 200
    html = response.content.decode()
    assert f"non-marketing from {day(next_update())}" in html
    assert 'value="set_marketing"' in html  # a pending contact is offered "Set as marketing"
    # The reason, as a phrase
    assert re.search(
        r"Last change \(\d+ \w{3} \d{4}, \d\d:\d\d\): Changed on the contact page by test\.", html
    )
    history = response.context["status_history"]
    assert [row.action for row in history] == [
        LedgerAction.DOWNGRADE_SCHEDULED,
        LedgerAction.UPGRADE,
    ]
    assert html.count('<tr class="ledger-row">') == 2


def test_change_page_ledger_is_limited_to_the_newest_rows(ops_client, people, monkeypatch):
    import contacts.admin as contacts_admin

    monkeypatch.setattr(contacts_admin, "CONTACT_PAGE_LEDGER_ROWS", 1)
    cat = people["cat"]
    response = ops_client.get(change_url(cat.pk))
    assert [row.action for row in response.context["status_history"]] == [
        LedgerAction.DOWNGRADE_SCHEDULED
    ]
    assert response.context["status_history_url"].endswith(f"?contact_id={cat.pk}")
    ledger = ops_client.get(response.context["status_history_url"])
    assert {row.contact_id for row in ledger.context["cl"].result_list} == {cat.pk}


def test_toggle_sets_marketing_and_writes_a_ledger_row(ops_client, marketing_ops, people):
    ann = people["ann"]
    before = usage()
    response = ops_client.post(toggle_url(ann.pk), {"operation": "set_marketing"})
    assert response.status_code == 302
    assert response["Location"] == change_url(ann.pk)
    assert state(ann) == (M, None)
    row = StatusChange.objects.get(contact_id=ann.pk)
    assert (row.action, row.from_status, row.to_status, row.delta) == ("upgrade", N, M, 1)
    assert (row.source_type, row.source_id, row.source_name, row.actor_id) == (
        "manual",
        str(marketing_ops.pk),
        "ops",
        marketing_ops.pk,
    )
    assert usage() == (before[0] + 1, before[1] + 1)
    assert messages_of(response) == [
        "“ann@example.com” is now marketing; it counts toward this period at once."
    ]


def test_toggle_sets_non_marketing_from_the_next_update_date(ops_client, people):
    bob = people["bob"]
    ledger_before = StatusChange.objects.count()
    page = ops_client.post(toggle_url(bob.pk), {"operation": "set_non_marketing"})
    # First the confirmation, with the saving from the next period; nothing is written.
    assert page.status_code == 200
    assert page.templates[0].name == "admin/contacts/contact/status_confirmation.html"
    assert 'id="saving-' in page.content.decode()
    assert StatusChange.objects.count() == ledger_before
    assert state(bob) == (M, None)
    response = ops_client.post(
        toggle_url(bob.pk), {"operation": "set_non_marketing", "confirmed": "yes"}
    )
    assert response.status_code == 302
    assert state(bob) == (M, next_update())
    assert messages_of(response) == [
        f"“bob@acme.com” is non-marketing from {day(next_update())}; "
        "it stays marketing and billable until then."
    ]
    row = StatusChange.objects.filter(contact_id=bob.pk).first()
    assert (row.action, row.effective_at, row.delta) == ("downgrade_scheduled", next_update(), -1)


def test_toggle_cancels_a_pending_downgrade(ops_client, people):
    cat = people["cat"]
    live_before = usage()
    response = ops_client.post(toggle_url(cat.pk), {"operation": "set_marketing"})
    assert state(cat) == (M, None)
    assert usage() == live_before  # still counted: costs nothing extra
    assert "its pending change to non-marketing was cancelled" in messages_of(response)[0]


def test_toggle_is_refused_to_sales_and_changes_nothing(sales_client, people):
    ann = people["ann"]
    ledger_before = StatusChange.objects.count()
    response = sales_client.post(toggle_url(ann.pk), {"operation": "set_marketing"})
    assert response.status_code == 403
    assert state(ann) == (N, None)
    assert StatusChange.objects.count() == ledger_before
    page = sales_client.get(change_url(ann.pk))
    assert page.status_code == 200
    assert "marketing-status-form" not in page.content.decode()


def test_toggle_needs_post_and_a_csrf_token(marketing_ops, people):
    ann = people["ann"]
    client = Client(enforce_csrf_checks=True)
    client.force_login(marketing_ops)
    assert client.get(toggle_url(ann.pk)).status_code == 405
    assert client.post(toggle_url(ann.pk), {"operation": "set_marketing"}).status_code == 403
    assert state(ann) == (N, None)


def test_auditor_sees_the_page_without_the_toggle(auditor_client, people):
    response = auditor_client.get(change_url(people["bob"].pk))
    assert response.status_code == 200
    html = response.content.decode()
    assert "marketing-status-form" not in html
    assert html.count('<tr class="ledger-row">') == 1
    assert auditor_client.post(toggle_url(people["bob"].pk), {"operation": "x"}).status_code == 403


# --- bulk status actions -------------------------------------------------------------


def test_bulk_set_marketing_shows_the_preview_first(ops_client, people):
    ids = [people[name].pk for name in ("ann", "bob", "cat", "dan")]
    ledger_before = StatusChange.objects.count()
    response = run_action(ops_client, "set_marketing_action", ids)
    assert response.status_code == 200
    assert response.templates[0].name == "admin/contacts/contact/marketing_confirmation.html"
    preview = response.context["preview"]
    assert (preview.matched, preview.would_change, preview.would_cancel, preview.already) == (
        4,
        2,
        1,
        1,
    )
    assert (preview.live_count, preview.live_after) == (2, 4)
    assert (preview.peak_count, preview.peak_after) == (2, 4)
    html = response.content.decode()
    assert '<tr id="preview-change"><th scope="row">Become marketing now' in html
    assert "<td>2 → 4</td>" in html
    assert html.count('name="_selected_action"') == 4
    assert 'name="confirm_count"' not in html
    assert StatusChange.objects.count() == ledger_before
    assert state(people["ann"]) == (N, None)


def test_bulk_set_marketing_confirmed(ops_client, marketing_ops, people):
    ids = [people["ann"].pk, people["cat"].pk]
    key = key_of(run_action(ops_client, "set_marketing_action", ids))
    response = confirm_action(ops_client, "set_marketing_action", ids, key)
    assert response.status_code == 302
    assert state(people["ann"]) == (M, None)
    assert state(people["cat"]) == (M, None)
    assert state(people["dan"]) == (N, None)
    request = StatusChangeRequest.objects.get(idempotency_key=key)
    assert (request.source_type, request.source_name, request.actor_id) == (
        "bulk_action",
        "Admin bulk action",
        marketing_ops.pk,
    )
    assert set(request.changes.values_list("contact_id", "action")) == {
        (people["ann"].pk, "upgrade"),
        (people["cat"].pk, "downgrade_cancelled"),
    }
    assert messages_of(response) == [
        "1 contact now marketing, 1 pending downgrade cancelled, "
        "0 already marketing. Live count 3, this period's peak 3."
    ]


def test_bulk_set_non_marketing_schedules_from_the_next_update(ops_client, people):
    ids = [people["ann"].pk, people["bob"].pk, people["cat"].pk]
    response = run_action(ops_client, "set_non_marketing_action", ids)
    preview = response.context["preview"]
    assert (preview.would_schedule, preview.already, preview.effective_from) == (
        1,
        2,
        next_update(),
    )
    assert f"Non-marketing from {day(next_update())}" in response.content.decode()
    response = confirm_action(ops_client, "set_non_marketing_action", ids, key_of(response))
    assert state(people["bob"]) == (M, next_update())
    assert state(people["ann"]) == (N, None)
    assert messages_of(response)[0].startswith(
        f"1 contact non-marketing from {day(next_update())} (billable until then)"
    )


@override_settings(MARKETING_CONFIRM_THRESHOLD=2)
def test_above_the_threshold_the_number_must_be_typed(ops_client, people):
    extra = ContactFactory.create_batch(2, source=people["ann"].source)
    ids = [people["ann"].pk, people["dan"].pk, *(c.pk for c in extra)]  # 4 would change
    page = run_action(ops_client, "set_marketing_action", ids)
    assert 'name="confirm_count"' in page.content.decode()
    key = key_of(page)
    ledger_before = StatusChange.objects.count()

    wrong = confirm_action(ops_client, "set_marketing_action", ids, key, count=3)
    assert wrong.status_code == 200
    assert "Type 4 (the number of contacts that will change) to confirm." in (
        wrong.content.decode()
    )
    assert key_of(wrong) == key
    assert StatusChange.objects.count() == ledger_before
    assert Contact.objects.filter(pk__in=ids, marketing_status=M).count() == 0

    missing = confirm_action(ops_client, "set_marketing_action", ids, key)
    assert missing.status_code == 200
    assert Contact.objects.filter(pk__in=ids, marketing_status=M).count() == 0

    right = confirm_action(ops_client, "set_marketing_action", ids, key, count="4")
    assert right.status_code == 302
    assert Contact.objects.filter(pk__in=ids, marketing_status=M).count() == 4
    assert StatusChange.objects.count() == ledger_before + 4


@override_settings(MARKETING_CONFIRM_THRESHOLD=2)
def test_below_or_at_the_threshold_no_number_is_asked(ops_client, people):
    ids = [people["ann"].pk, people["dan"].pk]
    page = run_action(ops_client, "set_marketing_action", ids)
    assert 'name="confirm_count"' not in page.content.decode()


def test_double_submit_with_the_same_key_changes_once(ops_client, people):
    ids = [people["ann"].pk, people["dan"].pk]
    key = key_of(run_action(ops_client, "set_marketing_action", ids))
    first = confirm_action(ops_client, "set_marketing_action", ids, key)
    ledger_after_first = StatusChange.objects.count()
    usage_after_first = usage()
    second = confirm_action(ops_client, "set_marketing_action", ids, key)
    assert first.status_code == second.status_code == 302
    assert StatusChange.objects.count() == ledger_after_first
    assert StatusChangeRequest.objects.filter(idempotency_key=key).count() == 1
    assert usage() == usage_after_first == (4, 4)
    # The first redirect's message was not read yet: both are shown on the next page.
    assert messages_of(second) == [
        "2 contacts now marketing, 0 pending downgrades cancelled, "
        "0 already marketing. Live count 4, this period's peak 4.",
        "This confirmation was already submitted; nothing more was changed.",
    ]


def test_select_across_runs_as_a_background_job_over_the_whole_filtered_changelist(
    ops_client, people, django_capture_on_commit_callbacks
):
    customers = ContactFactory.create_batch(3, lifecycle_stage="customer")
    query = "?lifecycle_stage=customer"
    one_id = [customers[0].pk]  # the page's checkbox; select_across covers the rest
    page = run_action(ops_client, "set_marketing_action", one_id, query=query, select_across=True)
    assert page.context["preview"].matched == 4  # dan and the three
    assert 'name="select_across" value="1"' in page.content.decode()
    assert 'id="runs-in-background"' in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = confirm_action(
            ops_client,
            "set_marketing_action",
            one_id,
            key_of(page),
            query=query,
            select_across=True,
        )
    job = BulkStatusJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/admin/contacts/bulkstatusjob/{job.pk}/change/"
    assert messages_of(response) == [
        "The change of 4 contacts runs in the background; this page shows its progress."
    ]
    assert job.criteria == {"list_filters": {"lifecycle_stage": "customer"}}
    assert (job.status, job.total, job.done, job.changed) == ("done", 4, 4, 4)
    assert set(Contact.objects.filter(marketing_status=M).values_list("email", flat=True)) == {
        "bob@acme.com",
        "cat@example.com",
        "dan@example.com",
        *(c.email for c in customers),
    }
    assert state(people["ann"]) == (N, None)


def test_double_submit_of_an_all_matching_change_finds_the_same_job(
    ops_client, people, django_capture_on_commit_callbacks
):
    """The "non-marketing" filter reads the clock, and the first job changed who matches it:
    the resubmitted confirmation (same key) finds the first job and changes nothing more."""
    query = "?marketing_status=non_marketing"
    ids = [people["ann"].pk]
    key = key_of(
        run_action(ops_client, "set_marketing_action", ids, query=query, select_across=True)
    )
    with django_capture_on_commit_callbacks(execute=True):
        first = confirm_action(
            ops_client, "set_marketing_action", ids, key, query=query, select_across=True
        )
    assert state(people["ann"]) == state(people["dan"]) == (M, None)
    ledger_after_first = StatusChange.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        second = confirm_action(
            ops_client, "set_marketing_action", ids, key, query=query, select_across=True
        )
    assert second.status_code == 302
    assert second["Location"] == first["Location"]
    assert BulkStatusJob.objects.count() == 1
    assert StatusChange.objects.count() == ledger_after_first
    assert messages_of(second)[-1] == (
        "This confirmation was already submitted; nothing more was changed."
    )


def test_sales_cannot_run_a_status_action(sales_client, people):
    ids = [people["ann"].pk]
    ledger_before = StatusChange.objects.count()
    response = confirm_action(sales_client, "set_marketing_action", ids, "admin-bulk:forged")
    # Sales has no status action: the POST is refused as "no action" and goes back to the list.
    assert response.status_code == 302
    assert "No action selected." in messages_of(response)
    assert not StatusChangeRequest.objects.filter(idempotency_key="admin-bulk:forged").exists()
    assert state(people["ann"]) == (N, None)
    assert StatusChange.objects.count() == ledger_before


# --- money and guardrails (billing plugs in through the preview hook and ChangeHeld) ------


def subscription_with(**fields) -> Subscription:
    guardrails = {k: fields.pop(k) for k in ("hard_cap", "operation_limit") if k in fields}
    set_guardrails(**guardrails)
    subscription = Subscription.load()
    for name, value in fields.items():
        setattr(subscription, name, value)
    subscription.save()
    return subscription


def test_bulk_preview_shows_the_extra_cost(ops_client, people):
    subscription_with(included_contacts=3)  # live 2; adding ann and dan makes 4: one block
    ids = [people["ann"].pk, people["dan"].pk]

    response = run_action(ops_client, "set_marketing_action", ids)

    cost = response.context["preview"].extra["cost"]
    assert (cost["peak_before"], cost["peak_after"], cost["invoice_delta"]) == (2, 4, 22_500)
    html = response.content.decode()
    assert (
        "This adds 1 overage block: +225.00 USD on this period's invoice "
        "(estimate 800.00 USD → 1,025.00 USD)." in html
    )
    assert 'id="cost-none"' not in html


def test_bulk_preview_says_when_there_is_no_extra_cost(ops_client, people):
    response = run_action(ops_client, "set_marketing_action", [people["ann"].pk])
    html = response.content.decode()
    assert (
        "No extra cost: the new peak stays within the tier (1,997 more fit before the first "
        "overage block). This period's invoice estimate stays at 800.00 USD." in html
    )
    assert 'id="cost-extra"' not in html


def test_bulk_set_marketing_past_the_guardrails_waits_for_approval(ops_client, people):
    subscription_with(operation_limit=1)
    ids = [people["ann"].pk, people["dan"].pk]
    page = run_action(ops_client, "set_marketing_action", ids)
    assert "This change will wait for approval:</strong> it would make 2 contacts marketing" in (
        page.content.decode()
    )
    key = key_of(page)
    ledger_before, usage_before = StatusChange.objects.count(), usage()

    response = confirm_action(ops_client, "set_marketing_action", ids, key)

    assert response.status_code == 302
    approval = PendingApproval.objects.get()
    assert (approval.idempotency_key, approval.new_marketing, approval.status) == (
        key,
        2,
        "pending",
    )
    assert [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)] == [
        (
            "warning",
            f"Nothing was changed yet. Waiting for approval #{approval.pk}: it would make 2 "
            "contacts marketing, more than the per-operation limit of 1. A user who may "
            "approve overage can approve or reject it under Billing › Pending approvals.",
        )
    ]
    assert state(people["ann"]) == state(people["dan"]) == (N, None)
    assert StatusChange.objects.count() == ledger_before
    assert usage() == usage_before
    assert not StatusChangeRequest.objects.filter(idempotency_key=key).exists()

    # Submitting the same confirmation again makes no second approval.
    confirm_action(ops_client, "set_marketing_action", ids, key)
    assert PendingApproval.objects.count() == 1


def test_bulk_set_non_marketing_is_never_held(ops_client, people):
    subscription_with(operation_limit=0, hard_cap=0)
    ids = [people["bob"].pk]
    key = key_of(run_action(ops_client, "set_non_marketing_action", ids))
    response = confirm_action(ops_client, "set_non_marketing_action", ids, key)
    assert state(people["bob"]) == (M, next_update())
    assert not PendingApproval.objects.exists()
    assert messages_of(response)[0].startswith("1 contact non-marketing from")


def test_toggle_past_the_hard_cap_waits_for_approval(ops_client, people):
    subscription_with(hard_cap=2)  # live 2: one more goes past it
    ann = people["ann"]
    ledger_before = StatusChange.objects.count()

    response = ops_client.post(toggle_url(ann.pk), {"operation": "set_marketing"})

    assert response.status_code == 302
    assert response["Location"] == change_url(ann.pk)
    approval = PendingApproval.objects.get()
    assert approval.contact_ids == [ann.pk]
    [message] = get_messages(response.wsgi_request)
    assert message.level_tag == "warning"
    assert str(message) == (
        f"Nothing was changed yet. Waiting for approval #{approval.pk}: it would take the "
        "billable count to 3, past the hard cap of 2. A user who may approve overage can "
        "approve or reject it under Billing › Pending approvals."
    )
    assert state(ann) == (N, None)
    assert StatusChange.objects.count() == ledger_before


def test_toggle_cancelling_a_pending_downgrade_is_not_held(ops_client, people):
    subscription_with(hard_cap=2)  # cat is still counted: re-marking adds nothing
    response = ops_client.post(toggle_url(people["cat"].pk), {"operation": "set_marketing"})
    assert state(people["cat"]) == (M, None)
    assert not PendingApproval.objects.exists()
    assert "was cancelled, at no extra cost" in messages_of(response)[0]


# --- deletion -----------------------------------------------------------------------


def test_delete_goes_through_the_service(ops_client, marketing_ops, people):
    bob = people["bob"]
    assert usage() == (2, 2)
    page = ops_client.get(reverse("admin:contacts_contact_delete", args=[bob.pk]))
    assert "is a marketing contact. Deleting it lowers the live count" in page.content.decode()
    response = ops_client.post(
        reverse("admin:contacts_contact_delete", args=[bob.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not Contact.objects.filter(pk=bob.pk).exists()
    row = StatusChange.objects.get(contact_id=bob.pk, action="deleted")
    assert (row.from_status, row.to_status, row.delta, row.actor_id) == (
        M,
        "none",
        -1,
        marketing_ops.pk,
    )
    assert usage() == (1, 2)  # live lowered at once, the peak stays


def test_sales_cannot_delete(sales_client, people):
    response = sales_client.post(
        reverse("admin:contacts_contact_delete", args=[people["bob"].pk]), {"post": "yes"}
    )
    assert response.status_code == 403
    assert Contact.objects.filter(pk=people["bob"].pk).exists()


# --- adding and editing ---------------------------------------------------------------


def add_data(**overrides) -> dict:
    data = {
        "email": "New.Person@Example.com",
        "first_name": "New",
        "last_name": "Person",
        "company": "",
        "phone": "",
        "source": "",
        "lifecycle_stage": "lead",
        "lead_status": "",
        "contact_type": "prospect",
        "_save": "Save",
    }
    data.update(overrides)
    return data


def test_add_with_a_locked_source_and_marketing_is_refused(ops_client, account):
    mobile = SourceFactory(name="Mobile app", kind="mobile_app")
    response = ops_client.post(ADD, add_data(source=str(mobile.pk), marketing="on"))
    assert response.status_code == 200
    assert "are always non-marketing: that kind of source is locked." in response.content.decode()
    assert Contact.objects.count() == 0
    assert StatusChange.objects.count() == 0


def test_add_as_marketing_by_a_permitted_user(ops_client, marketing_ops, account):
    manual = SourceFactory(name="Manual", kind="manual")
    response = ops_client.post(ADD, add_data(source=str(manual.pk), marketing="on"))
    assert response.status_code == 302
    contact = Contact.objects.get()
    assert contact.email == "new.person@example.com"
    assert (contact.marketing_status, contact.source_id) == (M, manual.pk)
    row = StatusChange.objects.get()
    assert (row.contact_id, row.action, row.source_type, row.actor_id) == (
        contact.pk,
        "upgrade",
        "manual",
        marketing_ops.pk,
    )
    assert usage() == (1, 1)
    assert response["Location"] == CHANGELIST


def test_add_as_marketing_past_the_hard_cap_stores_the_contact_and_holds_it(ops_client, account):
    set_guardrails(hard_cap=0)
    manual = SourceFactory(name="Manual", kind="manual")

    response = ops_client.post(ADD, add_data(source=str(manual.pk), marketing="on"), follow=True)

    contact = Contact.objects.get()
    assert (contact.marketing_status, contact.marketing_reason_type) == (N, "manual")
    assert not StatusChange.objects.exists()
    approval = PendingApproval.objects.get()
    assert approval.contact_ids == [contact.pk]
    assert any(
        m.startswith("The contact was created non-marketing. Waiting for approval")
        for m in messages_of(response)
    )


def test_add_without_a_source_is_created_by_hand_and_non_marketing(ops_client, account):
    response = ops_client.post(ADD, add_data())
    assert response.status_code == 302
    contact = Contact.objects.get()
    assert (contact.marketing_status, contact.source.name, contact.source.kind) == (
        N,
        "Created by hand",
        "manual",
    )
    assert StatusChange.objects.count() == 0


def test_add_by_users_without_the_permission_is_non_marketing_whatever_the_source(
    sales_client, account
):
    form = SourceFactory(name="Website form", kind="form")
    manual = SourceFactory(name="Manual", kind="manual")
    page = sales_client.get(ADD)
    assert 'name="marketing"' not in page.content.decode()

    # Ticking "marketing" without the permission is ignored: there is no such field.
    sales_client.post(ADD, add_data(email="a@x.com", source=str(manual.pk), marketing="on"))
    assert Contact.objects.get(email="a@x.com").marketing_status == N

    # A source whose default is marketing does not make it marketing either (DESIGN §1.3).
    sales_client.post(ADD, add_data(email="b@x.com", source=str(form.pk)))
    created = Contact.objects.get(email="b@x.com")
    assert (created.marketing_status, created.source_id) == (N, form.pk)
    assert StatusChange.objects.count() == 0


def test_add_refuses_a_duplicate_email_in_another_case(ops_client, people):
    response = ops_client.post(ADD, add_data(email="ANN@example.com"))
    assert response.status_code == 200
    assert "Contact with this Email already exists." in response.content.decode()
    assert Contact.objects.count() == 4


def test_edit_changes_ordinary_fields_only(ops_client, people):
    bob = people["bob"]
    data = add_data(
        email="Bob@Acme.com",
        first_name="Robert",
        last_name="",
        company="Acme",
        lifecycle_stage="customer",
        marketing_status="non_marketing",  # not a form field: ignored
    )
    del data["source"]
    response = ops_client.post(change_url(bob.pk), data)
    assert response.status_code == 302
    bob.refresh_from_db()
    assert (bob.email, bob.first_name, bob.lifecycle_stage) == (
        "bob@acme.com",
        "Robert",
        "customer",
    )
    assert (bob.marketing_status, bob.marketing_until) == (M, None)


# --- the ledger, requests, counters --------------------------------------------------


def test_ledger_admin_is_read_only_even_for_superusers(super_client, people):
    row = StatusChange.objects.first()
    assert super_client.get(reverse("admin:contacts_statuschange_add")).status_code == 403
    view = super_client.get(reverse("admin:contacts_statuschange_change", args=[row.pk]))
    assert view.status_code == 200
    assert 'type="submit"' not in view.content.decode().split('id="statuschange_form"')[1]
    changed = super_client.post(
        reverse("admin:contacts_statuschange_change", args=[row.pk]), {"delta": "0"}
    )
    assert changed.status_code == 403
    deleted = super_client.post(
        reverse("admin:contacts_statuschange_delete", args=[row.pk]), {"post": "yes"}
    )
    assert deleted.status_code == 403
    row_after = StatusChange.objects.get(pk=row.pk)
    assert (row_after.delta, row_after.action) == (row.delta, row.action)


def test_ledger_changelist_links_existing_contacts(super_client, people):
    bob = people["bob"]
    contacts_set_marketing(contacts=[people["dan"].pk], source=TEST_SOURCE)
    from contacts.status.services import contacts_delete

    contacts_delete(contacts=[people["dan"].pk])
    with CaptureQueriesContext(connection) as queries:
        response = super_client.get(
            reverse("admin:contacts_statuschange_changelist") + "?action__exact=upgrade"
        )
    assert response.status_code == 200
    html = response.content.decode()
    assert f'<a href="{change_url(bob.pk)}">{bob.pk}</a>' in html
    assert f"{people['dan'].pk} <span class='quiet'>(deleted)</span>" in html
    counts = [
        q["sql"]
        for q in queries.captured_queries
        if "COUNT(" in q["sql"].upper() and "contacts_statuschange" in q["sql"]
    ]
    assert counts and all("LIMIT 10001" in sql for sql in counts)
    searched = super_client.get(reverse("admin:contacts_statuschange_changelist") + f"?q={bob.pk}")
    assert {row.contact_id for row in searched.context["cl"].result_list} == {bob.pk}


@pytest.mark.parametrize("model", ["statuschangerequest", "periodusage"])
def test_requests_and_counters_are_read_only(super_client, people, model):
    changelist = super_client.get(reverse(f"admin:contacts_{model}_changelist"))
    assert changelist.status_code == 200
    assert super_client.get(reverse(f"admin:contacts_{model}_add")).status_code == 403
    pk = (StatusChangeRequest if model == "statuschangerequest" else PeriodUsage).objects.first().pk
    assert (
        super_client.post(reverse(f"admin:contacts_{model}_delete", args=[pk]), {"post": "yes"})
    ).status_code == 403
    assert (
        super_client.post(reverse(f"admin:contacts_{model}_change", args=[pk]), {}).status_code
        == 403
    )


# --- sources ------------------------------------------------------------------------


def test_source_admin_locked_kind_is_read_only(super_client, account):
    mobile = SourceFactory(name="Mobile app", kind="mobile_app")
    url = reverse("admin:contacts_source_change", args=[mobile.pk])
    page = super_client.get(url)
    assert 'name="default_marketing"' not in page.content.decode()
    response = super_client.post(
        url, {"name": "Mobile app", "kind": "mobile_app", "default_marketing": "on"}
    )
    assert response.status_code == 302
    mobile.refresh_from_db()
    assert mobile.default_marketing is False


def test_source_admin_refuses_marketing_for_a_locked_kind(super_client, account):
    response = super_client.post(
        reverse("admin:contacts_source_add"),
        {"name": "Inbox", "kind": "team_inbox", "default_marketing": "on"},
    )
    assert response.status_code == 200
    assert "Team inbox email sources are locked" in response.content.decode()
    assert not Source.objects.filter(name="Inbox").exists()


def test_source_admin_lists_the_lock(super_client, account):
    SourceFactory(name="Mobile app", kind="mobile_app")
    SourceFactory(name="Website form", kind="form")
    response = super_client.get(reverse("admin:contacts_source_changelist"))
    html = response.content.decode()
    assert html.count('<td class="field-locked_display"><img src="/static/admin/img/icon-yes') == 1


def test_source_with_contacts_is_not_deleted(super_client, people):
    source = people["ann"].source
    url = reverse("admin:contacts_source_delete", args=[source.pk])
    response = super_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:contacts_source_change", args=[source.pk])
    assert messages_of(response) == [
        "The source “Manual” cannot be deleted: 2 contacts came from it and keep it as their "
        "source. Delete those contacts first, or keep the source."
    ]
    assert Source.objects.filter(pk=source.pk).exists()


def test_unused_source_can_be_deleted(super_client, account):
    unused = SourceFactory(name="Old import", kind="import")
    response = super_client.post(
        reverse("admin:contacts_source_delete", args=[unused.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not Source.objects.filter(pk=unused.pk).exists()


# --- singletons ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "app", "name"),
    [(Account, "crm", "account"), (Subscription, "billing", "subscription")],
)
def test_singletons_cannot_be_added_twice_or_deleted(super_client, account, model, app, name):
    obj = model.load()
    assert super_client.get(reverse(f"admin:{app}_{name}_add")).status_code == 403
    assert (
        super_client.post(reverse(f"admin:{app}_{name}_delete", args=[obj.pk]), {"post": "yes"})
    ).status_code == 403
    assert model.objects.count() == 1
    changelist = super_client.get(reverse(f"admin:{app}_{name}_changelist"))
    assert changelist["Location"] == reverse(f"admin:{app}_{name}_change", args=[obj.pk])
    page = super_client.get(changelist["Location"])
    assert page.status_code == 200


def test_subscription_shows_its_prices_in_words(super_client, account):
    Subscription.load()
    page = super_client.get(reverse("admin:billing_subscription_change", args=[1]))
    html = page.content.decode()
    assert (
        "800.00 USD a month for up to 2,000 marketing contacts, then 225.00 USD per 5,000" in html
    )
    assert 'value="800.00"' in html


# --- costs on single changes, and the background job's pages --------------------------


def test_set_marketing_at_the_tier_shows_its_cost_and_asks_to_confirm(ops_client, people):
    subscription_with(included_contacts=2)  # live 2 (bob, cat): the account is at its tier
    ann = people["ann"]
    ledger_before, usage_before = StatusChange.objects.count(), usage()

    page = ops_client.post(toggle_url(ann.pk), {"operation": "set_marketing"})

    assert page.status_code == 200
    assert page.templates[0].name == "admin/contacts/contact/status_confirmation.html"
    html = page.content.decode()
    assert (
        "This adds 1 overage block: +225.00 USD on this period's invoice "
        "(estimate 800.00 USD → 1,025.00 USD)." in html
    )
    assert 'name="confirmed" value="yes"' in html
    assert (StatusChange.objects.count(), usage(), state(ann)) == (
        ledger_before,
        usage_before,
        (N, None),
    )

    response = ops_client.post(
        toggle_url(ann.pk), {"operation": "set_marketing", "confirmed": "yes"}
    )

    assert response.status_code == 302
    assert state(ann) == (M, None)
    assert usage() == (3, 3)


def test_set_marketing_within_the_tier_changes_at_once(ops_client, people):
    subscription_with(included_contacts=3)  # live 2: one more still fits
    response = ops_client.post(toggle_url(people["ann"].pk), {"operation": "set_marketing"})
    assert response.status_code == 302
    assert state(people["ann"]) == (M, None)


def test_the_status_panel_keeps_its_unsaved_edits_guard(ops_client, people):
    html = ops_client.get(change_url(people["ann"].pk)).content.decode()
    assert 'id="marketing-status-form"' in html
    assert "You have unsaved changes to this contact." in html


def test_bulk_non_marketing_confirmation_shows_the_saving_and_a_sample(ops_client, people):
    subscription_with(included_contacts=0, block_size=1, block_price=1_000)
    extra = ContactFactory.create_batch(11, first_name="Extra")
    make_marketing(*extra)
    ids = [people["bob"].pk, *[c.pk for c in extra]]

    page = run_action(ops_client, "set_non_marketing_action", ids)

    html = page.content.decode()
    # 13 marketing now (bob, cat, the eleven), cat already pending: 12 → 0 next period.
    assert (
        "From the next period this saves 120.00 USD a month: the invoice at the next "
        "period's opening count goes from 920.00 USD to 800.00 USD (12 → 0 marketing "
        "contacts)." in html
    )
    sample = page.context["sample"]
    assert [c.pk for c in sample] == sorted(ids)[:10]
    assert "The contacts it affects (the first 10 of 12):" in html
    assert 'id="runs-in-background"' not in html


def test_the_job_page_shows_progress_result_and_ledger(
    ops_client, people, django_capture_on_commit_callbacks
):
    query = "?marketing_status=non_marketing"
    ids = [people["ann"].pk]
    key = key_of(
        run_action(ops_client, "set_marketing_action", ids, query=query, select_across=True)
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = confirm_action(
            ops_client, "set_marketing_action", ids, key, query=query, select_across=True
        )
    job = BulkStatusJob.objects.get()

    page = ops_client.get(response["Location"])
    progress = ops_client.get(f"/admin/contacts/bulkstatusjob/{job.pk}/progress/").json()

    html = page.content.decode()
    assert '<progress id="job-bar" max="100" value="100"' in html
    assert '<td id="job-changed">2</td>' in html
    ledger_url = f"/admin/contacts/statuschange/?source_type=bulk_action&amp;source_id={job.pk}"
    assert ledger_url in html
    assert [c.email for c in page.context["sample"]] == ["ann@example.com", "dan@example.com"]
    assert 'id="job-resume"' not in html
    assert progress == {
        "status": "done",
        "status_display": "Done",
        "total": 2,
        "done": 2,
        "changed": 2,
        "cancelled": 0,
        "already": 0,
        "held": 0,
        "percent": 100,
        "finished": True,
    }
    ledger = ops_client.get(ledger_url.replace("&amp;", "&"))
    assert {row.contact_id for row in ledger.context["cl"].result_list} == {
        people["ann"].pk,
        people["dan"].pk,
    }


def test_a_job_held_by_the_hard_cap_says_so_and_links_the_approval(
    ops_client, people, django_capture_on_commit_callbacks
):
    subscription_with(hard_cap=3)  # live 2; ann and dan would make 4
    query = "?marketing_status=non_marketing"
    ids = [people["ann"].pk]
    key = key_of(
        run_action(ops_client, "set_marketing_action", ids, query=query, select_across=True)
    )
    with django_capture_on_commit_callbacks(execute=True):
        response = confirm_action(
            ops_client, "set_marketing_action", ids, key, query=query, select_across=True
        )

    page = ops_client.get(response["Location"])

    approval = PendingApproval.objects.get()
    html = page.content.decode()
    assert "Waiting for approval" in html
    assert "past the hard cap of 3" in html
    assert f'href="/admin/contacts/pendingapproval/{approval.pk}/change/"' in html
    assert state(people["ann"]) == (N, None)


def test_a_failed_job_is_resumed_from_its_page(
    ops_client, auditor_client, people, django_capture_on_commit_callbacks
):
    from contacts.status.bulk import bulk_status_job_submit

    job, _ = bulk_status_job_submit(
        contacts=Contact.objects.filter(pk=people["ann"].pk),
        operation="set_marketing",
        criteria={"selected": [str(people["ann"].pk)]},
        origin="admin",
        actor=None,
        idempotency_key="stuck",
        enqueue=False,
    )
    BulkStatusJob.objects.filter(pk=job.pk).update(status="failed", message="It stopped.")
    url = f"/admin/contacts/bulkstatusjob/{job.pk}/"
    assert 'id="job-resume"' not in auditor_client.get(url + "change/").content.decode()
    assert auditor_client.post(url + "resume/").status_code == 403
    assert 'id="job-resume"' in ops_client.get(url + "change/").content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = ops_client.post(url + "resume/")

    assert response.status_code == 302
    job.refresh_from_db()
    assert (job.status, job.changed) == ("done", 1)
    assert state(people["ann"]) == (M, None)
