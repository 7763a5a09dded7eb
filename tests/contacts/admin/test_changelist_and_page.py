"""The contacts admin: the changelist, its filters and counts, and a contact's page with its status button."""

import re
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from contacts.models import (
    Contact,
    Source,
)
from contacts.status.models import (
    LedgerAction,
    StatusChange,
)
from crm.admin import PAGE_IDS_CAP, EstimatedCountPaginator
from tests.contacts.admin.support import (
    CHANGELIST,
    M,
    N,
    change_url,
    counting_contacts,
    day,
    make_pending,
    messages_of,
    next_update,
    results,
    run_action,
    state,
    toggle_url,
    usage,
)
from tests.factories import ContactFactory
from tests.planner import SLOW_STATEMENT, planner_defaults

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
    # contact-list and ad-audience filters (one small query each). On PostgreSQL the count
    # has a time limit: set and put back, in a savepoint here inside the test's transaction
    # (one statement more outside a transaction, as a request runs).
    limit = 4 if connection.vendor == "postgresql" else 0
    with django_assert_max_num_queries(10 + limit):
        response = ops_client.get(CHANGELIST + "?marketing_status=non_marketing")
    changelist = response.context["cl"]
    # 32 non-marketing contacts: a full first page, the rest on the next.
    assert len(changelist.result_list) == changelist.list_per_page == 25
    assert changelist.result_count == 32


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
    # As on a never-analysed table, whatever ANALYZE an earlier test left in pg_class.
    monkeypatch.setattr("crm.admin.table_row_estimate", lambda queryset: None)
    response = ops_client.get(CHANGELIST)
    assert response.context["cl"].result_count == 2
    assert response.context["cl"].paginator.capped is True
    assert "more than 2 contacts" in response.content.decode()


def test_a_searched_count_is_capped_by_one_branch_without_counting_the_rest(
    ops_client, people, monkeypatch
):
    """Three contacts whose first name starts with "Al": that branch alone passes a cap
    of 2, so the list shows "more than 2" and the OR of every branch is not counted."""
    for email in ("al1@example.com", "al2@example.com", "al3@example.com"):
        ContactFactory(email=email, first_name="Alma")
    monkeypatch.setattr(EstimatedCountPaginator, "count_cap", 2)

    with CaptureQueriesContext(connection) as queries:
        response = ops_client.get(CHANGELIST, {"q": "al"})

    assert response.context["cl"].paginator.capped is True
    assert "more than 2 contacts" in response.content.decode()
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(*)" in q["sql"]]
    assert len(counts) == 1 and counts[0].startswith("SELECT CASE WHEN EXISTS")


def test_a_searched_count_under_the_cap_counts_each_contact_once(ops_client, people, monkeypatch):
    """ "ann" starts Ann's email and her first name: two branches, one contact."""
    monkeypatch.setattr(EstimatedCountPaginator, "count_cap", 2)

    response = ops_client.get(CHANGELIST, {"q": "ann"})

    assert response.context["cl"].result_count == 1
    assert response.context["cl"].paginator.capped is False
    assert [c.pk for c in response.context["cl"].result_list] == [people["ann"].pk]


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


def slow_admin_search(monkeypatch) -> None:
    """Each statement of the contacts admin's searches takes a tenth of a second more."""
    from contacts.admin import ContactAdmin

    search = ContactAdmin.get_search_results

    def slow_search(self, request, queryset, search_term):
        queryset, duplicates = search(self, request, queryset, search_term)
        return queryset.extra(where=[SLOW_STATEMENT]), duplicates

    monkeypatch.setattr(ContactAdmin, "get_search_results", slow_search)


@pytest.mark.postgres
def test_a_count_that_takes_too_long_shows_the_planners_estimate(ops_client, people, monkeypatch):
    """A searched list whose count runs past its time shows "about N" from the plan; the
    rows are still listed, and the time limit ends with the count."""
    from django.contrib import admin

    from contacts.admin import ContactAdmin

    slow_admin_search(monkeypatch)  # past the 20 ms the paginator waits for its count
    monkeypatch.setattr(EstimatedCountPaginator, "count_timeout_ms", 20)
    assert isinstance(admin.site._registry[Contact], ContactAdmin)

    response = ops_client.get(CHANGELIST + "?q=ann")

    assert response.status_code == 200
    paginator = response.context["cl"].paginator
    assert paginator.estimated is True
    # Paged with a LIMIT whatever the estimate: Django reads a one-page list whole.
    assert response.context["cl"].multi_page
    assert re.search(r"about \d+ contacts?", response.content.decode())
    assert results(response) == {"ann@example.com"}
    assert planner_defaults()[0] == "0"


@pytest.mark.postgres
def test_a_count_in_time_leaves_the_time_limit_as_it_was(people):
    from crm.admin import timed_capped_rows

    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 5000")
    try:
        assert timed_capped_rows(Contact.objects.all(), 10, 1_000) == (4, None)
        with connection.cursor() as cursor:
            cursor.execute("SHOW statement_timeout")
            assert cursor.fetchone()[0] == "5s"
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 0")


def test_the_unengaged_list_is_newest_created_first(ops_client, people):
    """It walks the created_at index from its cutoff (not the primary key from the newest
    contact): the order is by creation, newest first, whatever the ids."""
    import datetime as dt

    from django.utils import timezone

    now = timezone.now()
    ages = {"ann": 400, "bob": 200, "cat": 300, "dan": 10}  # days; dan is too new
    for name, days in ages.items():
        Contact.objects.filter(pk=people[name].pk).update(
            created_at=now - dt.timedelta(days=days), last_engaged_at=None
        )

    response = ops_client.get(CHANGELIST + "?unengaged=90")

    listed = [contact.email for contact in response.context["cl"].result_list]
    assert listed == ["bob@acme.com", "cat@example.com", "ann@example.com"]


def test_a_searched_list_over_many_pages_shows_the_newest_matches_first(ops_client, people):
    made = [
        ContactFactory(email=f"annika{i}@example.org", first_name="Annika").pk for i in range(30)
    ]

    response = ops_client.get(CHANGELIST + "?q=annik")

    changelist = response.context["cl"]
    assert changelist.result_count == 30 and changelist.multi_page
    assert [c.pk for c in changelist.result_list] == sorted(made, reverse=True)[:25]


@pytest.mark.postgres
def test_a_searched_page_too_slow_the_planners_way_is_read_through_the_indexes(
    ops_client, people, monkeypatch
):
    """Past SEARCH_READ_TIMEOUT_MS the page is read again with index walks off (so through
    the search's bitmaps, sorted): the same rows, and both settings back afterwards."""
    from crm import planner

    made = [
        ContactFactory(email=f"annika{i}@example.org", first_name="Annika").pk for i in range(30)
    ]
    slow_admin_search(monkeypatch)  # past the 20 ms the first read may take
    monkeypatch.setattr(planner, "SEARCH_READ_TIMEOUT_MS", 20)
    monkeypatch.setattr(EstimatedCountPaginator, "count_timeout_ms", 5_000)
    # More matches than the cap: the page is not known to be few rows, so it is read the
    # planner's way first.
    monkeypatch.setattr(EstimatedCountPaginator, "count_cap", 26)
    with CaptureQueriesContext(connection) as queries:
        response = ops_client.get(CHANGELIST + "?q=annik")

    assert [c.pk for c in response.context["cl"].result_list] == sorted(made, reverse=True)[:25]
    settings = [q["sql"] for q in queries.captured_queries if "set_config" in q["sql"]]
    assert any("enable_indexscan" in sql and "'off'" in sql for sql in settings)
    assert planner_defaults() == ("0", "on", "4")


def page_settings(queries) -> list[str]:
    """The statements that set the planner's settings for a page's read (the count sets a
    time limit alone; inside the test's transaction each block's values are put back by
    a statement without current_setting)."""
    return [
        sql
        for sql in (q["sql"] for q in queries.captured_queries)
        if "current_setting" in sql and ("enable_indexscan" in sql or "random_page_cost" in sql)
    ]


def annikas_among(others: int) -> list[int]:
    """30 contacts named Annika among `others` more, the table analysed (its row estimate)."""
    source = Source.objects.get(name="Manual")
    Contact.objects.bulk_create(
        ContactFactory.build(email=f"other{i}@example.net", first_name="Olga", source=source)
        for i in range(others)
    )
    made = [
        ContactFactory(email=f"annika{i}@example.org", first_name="Annika").pk for i in range(30)
    ]
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE contacts_contact")
    return made


@pytest.mark.postgres
def test_a_search_of_few_matches_counted_in_full_is_read_through_its_indexes_at_once(
    ops_client, people, monkeypatch
):
    """The list is the search's matches alone, the paginator counted them, and 30 among
    434 contacts are few: reading all 30 through the search's indexes costs less than
    walking the table for a page of 25 (crm.planner.indexes_read_less), so that is the only
    read, with no time limit and no walk first. (Past the paginator's cap of ids kept.)"""
    monkeypatch.setattr(EstimatedCountPaginator, "ids_cap", 20)
    made = annikas_among(400)

    with CaptureQueriesContext(connection) as queries:
        response = ops_client.get(CHANGELIST + "?q=annik")

    changelist = response.context["cl"]
    assert changelist.search_read_through_indexes
    assert [c.pk for c in changelist.result_list] == sorted(made, reverse=True)[:25]
    settings = page_settings(queries)
    assert len(settings) == 1
    assert "'enable_indexscan', 'off'" in settings[0] and "statement_timeout" not in settings[0]
    assert planner_defaults() == ("0", "on", "4")


@pytest.mark.postgres
@pytest.mark.parametrize(
    "query, others, cap",
    [
        ("?q=annik&marketing_status=non_marketing", 400, None),
        ("?q=annik", 400, 26),
        ("?q=annik", 0, None),
    ],
    ids=["a filter beside the search", "more matches than the cap", "many of the rows match"],
)
def test_a_search_not_known_to_be_cheaper_through_its_indexes_is_read_the_planners_way(
    ops_client, people, monkeypatch, query, others, cap
):
    """With a filter beside it the search's own matches may be many more than the list's;
    past the cap they were not counted; and 30 of 34 contacts are found by a short walk:
    the page is read the planner's way, in its time limit."""
    annikas_among(others)
    if cap:
        monkeypatch.setattr(EstimatedCountPaginator, "count_cap", cap)
    monkeypatch.setattr(EstimatedCountPaginator, "count_timeout_ms", 5_000)

    with CaptureQueriesContext(connection) as queries:
        response = ops_client.get(CHANGELIST + query)

    assert not response.context["cl"].search_read_through_indexes
    assert len(response.context["cl"].result_list) == 25
    settings = page_settings(queries)
    assert len(settings) == 1
    assert "'statement_timeout', '100'" in settings[0] and "enable_indexscan" not in settings[0]


@pytest.mark.postgres
def test_a_count_keeps_the_ids_newest_first_up_to_its_limits(people):
    from crm.admin import capped_rows

    everyone = Contact.objects.all()
    newest_first = sorted((c.pk for c in people.values()), reverse=True)

    assert capped_rows(everyone, 10, ids_up_to=10) == (4, newest_first)
    assert capped_rows(everyone, 10, ids_up_to=3) == (4, None)  # past the ids' limit
    assert capped_rows(everyone, 3, ids_up_to=10) == (4, None)  # past the count's cap
    assert capped_rows(everyone.filter(email="nobody@example.com"), 10, ids_up_to=10) == (0, [])
    # A part with more rows than the cap proves the count without it, and keeps no ids.
    assert capped_rows(everyone, 3, parts=[everyone], ids_up_to=10) == (4, None)
    assert capped_rows(everyone, 10, parts=[everyone], ids_up_to=10) == (4, newest_first)


@pytest.mark.postgres
def test_a_list_counted_in_full_reads_its_page_by_the_ids_it_counted(ops_client, people):
    """Newest first and at most PAGE_IDS_CAP rows: the count returns their ids, and each
    page is read by its own 25 ids (the search is not read again), still filtered by it."""
    made = [
        ContactFactory(email=f"annika{i}@example.org", first_name="Annika").pk for i in range(30)
    ]
    newest = sorted(made, reverse=True)

    with CaptureQueriesContext(connection) as queries:
        first = ops_client.get(CHANGELIST + "?q=annik")
    # Read now: the next request empties the query log that `queries` is a slice of.
    page = [q["sql"] for q in queries.captured_queries if '"contacts_contact"."phone"' in q["sql"]]
    second = ops_client.get(CHANGELIST + "?q=annik&p=2")

    assert first.context["cl"].paginator.ids == newest
    assert [c.pk for c in first.context["cl"].result_list] == newest[:25]
    assert [c.pk for c in second.context["cl"].result_list] == newest[25:]
    assert len(page) == 1
    assert f'"contacts_contact"."id" IN ({", ".join(map(str, newest[:25]))})' in page[0]
    assert "LIKE" in page[0]  # the search still applies to the page's rows


@pytest.mark.postgres
@pytest.mark.parametrize(
    "query, ids_cap",
    [("?q=annik&o=1", PAGE_IDS_CAP), ("?q=annik", 20)],
    ids=["ordered otherwise", "more rows than ids kept"],
)
def test_a_list_not_read_by_ids_reads_its_page_as_before(
    ops_client, people, monkeypatch, query, ids_cap
):
    made = [
        ContactFactory(email=f"annika{i}@example.org", first_name="Annika").pk for i in range(30)
    ]
    monkeypatch.setattr(EstimatedCountPaginator, "ids_cap", ids_cap)

    response = ops_client.get(CHANGELIST + query)

    changelist = response.context["cl"]
    assert changelist.paginator.ids is None
    assert len(changelist.result_list) == 25
    assert {c.pk for c in changelist.result_list} <= set(made)


@pytest.mark.postgres
def test_a_filtered_list_counts_without_keeping_ids(ops_client, people):
    """A filter's count reads its index alone; the ids would cost a read of every row."""
    for i in range(30):
        ContactFactory(email=f"annika{i}@example.org", first_name="Annika")

    with CaptureQueriesContext(connection) as queries:
        response = ops_client.get(CHANGELIST + "?marketing_status=non_marketing")

    assert response.context["cl"].paginator.ids is None
    assert len(response.context["cl"].result_list) == 25
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and not any("array_agg" in sql for sql in counts)
