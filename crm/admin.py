"""Shared admin bases, and the admin of the account's configuration.

Why a big-table base
--------------------
Django's changelist counts its rows twice per page: `paginator.count` (the
filtered count, for the page links) and `root_queryset.count()` (the "N total"
next to the search box). Both are a `COUNT(*)` over the table, which on
PostgreSQL is a full scan: about a second at 1,000,000 contacts, on every page
view. `BigTableAdmin` removes both:

* `show_full_result_count = False` drops the second count;
* `EstimatedCountPaginator` answers the first without a full scan. An
  unfiltered changelist reads PostgreSQL's own estimate of the table's rows
  (`pg_class.reltuples`, kept by ANALYZE/autovacuum); a filtered one, or a small
  or never-analysed table, counts at most `BIG_TABLE_COUNT_CAP + 1` rows through
  a LIMITed subquery and shows "more than 10,000" past the cap. On PostgreSQL
  that count may take `COUNT_TIMEOUT_MS`: a filter that matches millions of rows
  through an index that cannot stop at the cap, or a search that the planner reads
  the wrong way, could otherwise take seconds at 10,000,000 contacts. Past the time
  the planner's estimate is shown instead ("about 40"). A searched list ordered newest
  first that counts at most `PAGE_IDS_CAP` rows keeps their ids from that count, and
  each page is read by its own ids;
* facets (per-filter counts) are off, `date_hierarchy` is not used (it runs a
  DISTINCT over dates), and subclasses set `list_select_related` and
  `raw_id_fields`/`autocomplete_fields` so a page is a fixed number of queries.

The templates `admin/pagination.html`, `admin/actions.html` and
`admin/search_form.html` show `paginator.display_count` ("about 1,000,000",
"more than 10,000") where the paginator offers one.

Every admin page renders in the account's time zone (crm.middleware.AccountTimeZoneMiddleware).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.views.main import SEARCH_VAR, ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.formats import number_format
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.translation import gettext as _

from crm.calendar import BillingCalendar
from crm.models import Account
from crm.planner import indexes_read_less, read_searched, within_time

# Rows a filtered changelist counts before it says "more than …": about 10 ms on an index.
BIG_TABLE_COUNT_CAP = 10_000
# How long a changelist's count may take on PostgreSQL before the planner's estimate
# stands in for it: a capped count takes 5–20 ms at 1,000,000 contacts (the pending
# filter's, the slowest, builds a bitmap of its 100,000 rows first).
COUNT_TIMEOUT_MS = 50


# A searched list ordered newest first that counted at most this many rows keeps their
# ids, newest first, from its count, and reads a page by the page's own ids: 25 rows
# fetched by their key instead of every match read again (a search's bitmap, a sort). The
# ids cost their transfer: about 0.7 ms for 3,000 of them and 2.7 ms for 10,000 here.
PAGE_IDS_CAP = 5_000


def capped_rows(
    queryset: QuerySet,
    cap: int = BIG_TABLE_COUNT_CAP,
    parts: Sequence[QuerySet] = (),
    ids_up_to: int = 0,
) -> tuple[int, list[int] | None]:
    """Count at most `cap + 1` rows: SELECT COUNT(*) FROM (SELECT id … LIMIT cap + 1); and
    with `ids_up_to`, on PostgreSQL, the rows' ids, newest first, when there are at most
    that many (else None).

    `parts` are querysets whose rows are all rows of `queryset` (the branches of a search's
    OR): when one of them alone has more than `cap` rows, so has the queryset, and the one
    statement answers `cap + 1` without counting. Each part's EXISTS … OFFSET cap reads at
    most `cap + 1` entries of its own index, where the queryset's OR of several indexes
    reads every match of each (at 10,000,000 contacts a first name's 55,000)."""
    connection = connections[queryset.db]
    # Past the cap the rows are not all read, so neither are their ids.
    ids_up_to = min(ids_up_to, cap) if connection.vendor == "postgresql" else 0
    limited = queryset.order_by().values("pk")[: cap + 1]
    if not parts and not ids_up_to:
        return limited.count(), None
    count_sql, count_params = limited.query.sql_with_params()
    if ids_up_to:
        # One array: the count, then (for at most ids_up_to rows) their ids, newest first.
        counted = (
            "SELECT CASE WHEN COUNT(*) <= %s THEN array_prepend(COUNT(*), "
            "array_agg(pk::bigint ORDER BY pk DESC)) ELSE ARRAY[COUNT(*)] END "
            f"FROM ({count_sql}) capped(pk)"
        )
        counted_params, over = [ids_up_to, *count_params], "ARRAY[%s::bigint]"
    else:
        counted = f"SELECT COUNT(*) FROM ({count_sql}) capped"
        counted_params, over = count_params, "%s"
    sql, params = counted, counted_params
    if parts:
        # SELECT 1 … LIMIT 1 OFFSET cap: an index-only scan where the part's index allows one.
        beyond = [
            part[cap : cap + 1].query.exists(limit=False).get_compiler(queryset.db).as_sql()
            for part in parts
        ]
        sql = (
            "SELECT CASE WHEN "
            + " OR ".join(f"EXISTS ({part_sql})" for part_sql, _ in beyond)
            + f" THEN {over} ELSE ({counted}) END"
        )
        params = [*(p for _, part_params in beyond for p in part_params), cap + 1, *params]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        value = cursor.fetchone()[0]
    if not ids_up_to:
        return value, None
    return value[0], (value[1:] if value[0] <= ids_up_to else None)


def capped_count(
    queryset: QuerySet, cap: int = BIG_TABLE_COUNT_CAP, parts: Sequence[QuerySet] = ()
) -> int:
    """At most `cap + 1`: the rows of `queryset` counted so (`capped_rows`)."""
    return capped_rows(queryset, cap, parts)[0]


def timed_capped_rows(
    queryset: QuerySet,
    cap: int,
    timeout_ms: int,
    parts: Sequence[QuerySet] = (),
    ids_up_to: int = 0,
) -> tuple[int, list[int] | None] | None:
    """`capped_rows`, or None when it takes longer than `timeout_ms` (PostgreSQL)."""
    return within_time(
        queryset.db, timeout_ms, lambda: capped_rows(queryset, cap, parts, ids_up_to)
    )


def newest_first(queryset: QuerySet) -> bool:
    """True when the queryset is ordered by its primary key alone, newest first."""
    pk = queryset.model._meta.pk.attname
    return tuple(queryset.query.order_by) in (("-pk",), (f"-{pk}",))


def planned_rows(queryset: QuerySet) -> int:
    """PostgreSQL's estimate of the rows of a queryset, from its plan (no rows are read)."""
    connection = connections[queryset.db]
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def table_row_estimate(queryset: QuerySet) -> int | None:
    """PostgreSQL's estimate of the rows of the queryset's table, or None where there is none."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
            [queryset.model._meta.db_table],
        )
        row = cursor.fetchone()
    # -1: never vacuumed or analysed (PostgreSQL 14+); 0 may mean the same on older versions.
    if row is None or row[0] is None or row[0] <= 0:
        return None
    return int(row[0])


def is_unfiltered(queryset: QuerySet) -> bool:
    """True when the queryset returns every row of its table (so the table estimate applies)."""
    query = queryset.query
    return (
        not query.where
        and not query.distinct
        and not query.is_sliced
        and query.combinator is None
        and not query.group_by
    )


class EstimatedCountPaginator(Paginator):
    """A paginator that never counts a big table in full (see the module docstring)."""

    count_cap = BIG_TABLE_COUNT_CAP
    count_timeout_ms = COUNT_TIMEOUT_MS

    estimated = False  # `count` is PostgreSQL's estimate
    capped = False  # there are more than `count` rows
    shown_count = None  # the estimate shown, when it is not `count`
    parts: Sequence[QuerySet] = ()  # subsets of the rows that may prove the cap (capped_rows)
    ids_cap = PAGE_IDS_CAP
    ids: list[int] | None = None  # every row's id, newest first, when counted and few

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return super().count
        if is_unfiltered(queryset):
            estimate = table_row_estimate(queryset)
            # A small table is counted exactly: its estimate may be stale and counting is cheap.
            if estimate is not None and estimate > self.count_cap:
                self.estimated = True
                return estimate
        counted = timed_capped_rows(
            queryset,
            self.count_cap,
            self.count_timeout_ms,
            self.parts,
            ids_up_to=self.ids_cap if newest_first(queryset) else 0,
        )
        if counted is None:
            # The count ran out of time: show the planner's estimate, and page as if there
            # were more than one page, so each page is read with its LIMIT (Django reads
            # a list it believes fits one page whole).
            self.estimated = True
            self.shown_count = planned_rows(queryset)
            return max(self.shown_count, self.per_page + 1)
        counted, self.ids = counted
        if counted > self.count_cap:
            self.capped = True
            return self.count_cap
        return counted

    def page(self, number):
        """A page; where the rows' ids were kept (`ids`), read by the page's own ids, which
        the list's conditions still filter (a row changed since the count drops out)."""
        page = super().page(number)
        if self.ids is not None and self.count:
            ids = self.ids[page.start_index() - 1 : page.end_index()]
            page.object_list = self.object_list.filter(pk__in=ids)
        return page

    @property
    def display_count(self) -> str:
        total = self.count  # counts first, which may set shown_count
        shown = total if self.shown_count is None else self.shown_count
        count = number_format(shown, force_grouping=True)
        if self.estimated:
            return f"about {count}"
        if self.capped:
            return f"more than {count}"
        return count


class BigTableChangeList(ChangeList):
    """Django's changelist, with a searched page read as crm.planner.read_searched says,
    and each row's link written from one reversed URL: Django reverses the change URL for
    every row, then resolves it again to add the list's filters, a tenth of a filtered
    page's time."""

    ROW_PK = "ROWPK"  # the placeholder of the row's key in the URL written once

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Added to the one URL below, so the rows' links need no resolving of their own.
        self.row_filters, self.preserved_filters = self.preserved_filters, ""

    def get_results(self, request):
        super().get_results(request)
        if self.query and not self.list_editable:
            page = self.result_list
            self.result_list = read_searched(
                page.db, lambda: list(page), through_indexes=self.search_read_through_indexes
            )

    @cached_property
    def search_read_through_indexes(self) -> bool:
        """True when the list is the search's matches alone (no filter is active), the
        paginator counted them (at most its cap) without keeping their ids (the page is
        then read by those), and they are few enough that reading all of them through the
        search's indexes costs less than walking the table for this page
        (crm.planner.indexes_read_less). With a filter beside the search, the search's own
        matches may be many more than the list's."""
        paginator = self.paginator
        if (
            self.has_active_filters
            or not isinstance(paginator, EstimatedCountPaginator)
            or paginator.ids is not None  # the page is read by its ids
            or paginator.estimated
            or paginator.capped
        ):
            return False
        table_rows = table_row_estimate(self.queryset)
        return table_rows is not None and indexes_read_less(
            paginator.count, self.list_per_page * self.page_num, table_rows
        )

    @cached_property
    def row_url(self) -> str:
        url = reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=(self.ROW_PK,),
            current_app=self.model_admin.admin_site.name,
        )
        return add_preserved_filters(
            {"preserved_filters": self.row_filters, "opts": self.opts}, url
        )

    def url_for_result(self, result) -> str:
        pk = getattr(result, self.pk_attname)
        if not isinstance(pk, int):  # a text key: reverse() escapes it for the URL
            return add_preserved_filters(
                {"preserved_filters": self.row_filters, "opts": self.opts},
                super().url_for_result(result),
            )
        # The path comes before the query string, so the first placeholder is the key's.
        return self.row_url.replace(self.ROW_PK, str(pk), 1)


class BigTableAdmin(admin.ModelAdmin):
    """The base of every changelist over a table that grows with the contacts."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    # 25 rows a page, as HubSpot's contact lists open: each row costs about half a
    # millisecond of rendering, and a page of 50 put the contacts list past 50 ms.
    list_per_page = 25
    list_max_show_all = 200
    date_hierarchy = None

    def action_checkbox(self, obj):
        """The row's checkbox, as Django's own markup, written directly: Django renders a
        form widget template for each row, a sixth of a contacts page's time."""
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            str(obj.pk),
            format_html(_("Select this object for an action - {}"), str(obj)),
        )

    def get_changelist(self, request, **kwargs):
        return BigTableChangeList

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        paginator = super().get_paginator(
            request, queryset, per_page, orphans, allow_empty_first_page
        )
        # Only a searched list's count keeps the ids: it reads each match's row anyway (the
        # search's conditions are checked there), where a filter's count reads its index
        # alone, and its ids would cost a read of every row (at 10,000,000 contacts a
        # lifecycle stage's capped count took 1.5 ms so and 54 ms with the ids).
        if not request.GET.get(SEARCH_VAR, "").strip():
            paginator.ids_cap = 0
        return paginator

    def get_changelist_instance(self, request):
        # A filter value the database cannot take (a date whose UTC equivalent is out of
        # range) fails only when the page is counted. Django answers IncorrectLookupParameters
        # with the list without filters (?e=1); the message says why.
        try:
            return super().get_changelist_instance(request)
        except (OverflowError, ValueError) as error:
            messages.error(
                request,
                "The list is shown without filters: a value in the address cannot be used "
                "as a filter (a date out of range, for instance).",
            )
            raise IncorrectLookupParameters(error) from error


def account_time_zone():
    return BillingCalendar.for_account().tz


class ReadOnlyAdminMixin:
    """Rows only the system writes: nobody adds, changes or deletes them here, superusers included."""

    actions = None

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class OwnsSystemRowsMixin:
    """For an object that owns rows the system wrote for it (a workflow's runs and
    enrollments, a rotation plan's runs and members): deleting the object takes them along.

    Django's delete page asks for the delete permission of every related row it would
    remove, and read-only admins refuse it to everyone, superusers included — so such an
    object could never be deleted. Here those rows need no permission of their own; any
    other related row still does, and protected rows still block.
    """

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        system_rows = {
            str(model._meta.verbose_name)
            for model, model_admin in self.admin_site._registry.items()
            if isinstance(model_admin, ReadOnlyAdminMixin)
        }
        return deleted, counts, {p for p in perms_needed if str(p) not in system_rows}, protected


class SingletonAdmin(admin.ModelAdmin):
    """A model with one row (pk = SINGLETON_PK): no second row, no deletion.

    The changelist goes straight to the row when it exists.
    """

    def _singleton_exists(self) -> bool:
        return self.model.objects.filter(pk=self.model.SINGLETON_PK).exists()

    def has_add_permission(self, request):
        return super().has_add_permission(request) and not self.model.objects.exists()

    def has_delete_permission(self, request, obj=None):
        return False

    def get_actions(self, request):
        return {}

    def save_model(self, request, obj, form, change):
        if not change:
            obj.pk = self.model.SINGLETON_PK
        super().save_model(request, obj, form, change)

    def changelist_view(self, request, extra_context=None):
        if self._singleton_exists() and self.has_view_or_change_permission(request):
            opts = self.model._meta
            return HttpResponseRedirect(
                reverse(
                    f"admin:{opts.app_label}_{opts.model_name}_change",
                    args=[self.model.SINGLETON_PK],
                    current_app=self.admin_site.name,
                )
            )
        return super().changelist_view(request, extra_context)


@admin.register(Account)
class AccountAdmin(SingletonAdmin):
    fieldsets = [
        (None, {"fields": ["name"]}),
        (
            "Billing calendar",
            {
                "fields": ["update_day", "yearly_plan", "time_zone"],
                "description": (
                    "A billing period runs from one update date to the next, starting at local "
                    "midnight in this time zone. Contacts set as non-marketing stay marketing "
                    "until the next update date. Change the calendar between periods, not "
                    "during one: the current period's bounds follow it at once."
                ),
            },
        ),
        (
            "New contacts from forms",
            {
                "fields": ["forms_create_marketing", "external_forms_marketing"],
                "description": (
                    "Marketing contacts are billable from the moment they are created. A form "
                    "may override the first setting; the second applies to every external form."
                ),
            },
        ),
        (
            "Guardrails",
            {
                "fields": ["hard_cap", "operation_limit"],
                "description": (
                    "A change that would take the billable count past the hard cap, or make "
                    "more contacts marketing at once than the per-operation limit, waits for "
                    "approval by a Billing admin. Public forms still store the contact, as "
                    "non-marketing, and hold its upgrade."
                ),
            },
        ),
        ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    readonly_fields = ["created_at", "updated_at"]
    list_display = ["name", "update_day", "yearly_plan", "time_zone"]
