"""k. Reads at scale: every contacts list of the API and the admin, timed server-side.

Each path (unfiltered, each filter, each kind of search, a second page) is requested
`REQUESTS` times through Django's test client in this process — the whole request:
middleware, authentication, the queries, the rendering — after `WARM_UP` untimed
requests; the median and the 95th percentile count (bar: p50 ≤ 50 ms, p95 ≤ 100 ms).
The queries of one request are counted too.

The naive baseline, in the same run over the same rows: the same lists as Django and
DRF give them out of the box — the admin's default paginator with its exact `COUNT(*)`
and the "N total" count, the API's page-number pagination with its count — and without
the search indexes (dropped inside a transaction that is rolled back afterwards).

The rows are demo-shaped contacts written by one INSERT … SELECT (tests/perf/read_data.py:
the demo's names, companies, sources, stages, scores and engagement dates, about 40 %
marketing of which a quarter pending, the ledger and counters to match), which replace
the benchmark's synthetic contacts; a database that already holds them is reused.
`--seed-demo` uses `seed_demo --contacts N` instead (the demo itself, with its events and
status history through the service: about 12 minutes at 1,000,000).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import statistics
import time
from urllib.parse import urlencode

REQUESTS = 30
# The naive lists take a second or more each: fewer requests keep the run short.
NAIVE_REQUESTS = 10
WARM_UP = 3
P50_BAR = 50.0  # ms
P95_BAR = 100.0  # ms
# The indexes the naive baseline goes without: prefix search on names and company
# (contacts migrations 0024_contact_prefix_search_indexes and 0025_contact_name_prefix_index)
# and the email's pattern-ops index.
SEARCH_INDEXES = (
    "contact_name_prefix",
    "contact_last_name_prefix",
    "contact_company_prefix",
)
EMAIL_PATTERN_INDEX = (
    "SELECT indexname FROM pg_indexes WHERE tablename = 'contacts_contact' "
    "AND indexdef LIKE '%(email varchar_pattern_ops)%'"
)


def ensure_read_data(count: int, say) -> dict:
    """The read data set of `count` contacts (tests/perf/read_data.py), unless present."""
    from tests.perf import data, read_data

    if read_data.present(count):
        say(f"k: the read data set of {count:,} contacts is in place")
        return {"seconds": None}
    say(f"k: read data set, {count:,} contacts (INSERT … SELECT)")
    started = time.perf_counter()
    written = read_data.fill(count)
    data.checkpoint()
    return {**written, "seconds": time.perf_counter() - started}


def ensure_demo_data(count: int, say) -> None:
    """The demo data of `count` contacts, in place of the benchmark's synthetic ones."""
    from django.core.management import call_command

    from contacts.models import Contact
    from tests.perf import data

    if Contact.objects.filter(email__endswith="@bench.example").exists():
        say("k: removing the synthetic contacts of the other sections")
        data.execute(
            f"TRUNCATE {data.CONTACT}, {data.LEDGER}, {data.REQUEST}, {data.USAGE}, "
            f"{data.STATE} RESTART IDENTITY CASCADE"
        )
    say(f"k: demo data, {count:,} contacts (seed_demo; about 1–2 minutes when it has to load)")
    call_command("seed_demo", contacts=count, verbosity=0)
    data.execute(f"VACUUM ANALYZE {data.CONTACT}")
    data.checkpoint()


def sample_terms() -> dict[str, str]:
    """Search terms taken from a contact in the middle of the table."""
    from contacts.models import Contact

    middle = Contact.objects.order_by("pk").values_list("pk", flat=True)
    pk = middle[middle.count() // 2] if middle.exists() else 0
    contact = Contact.objects.filter(pk__gte=pk).order_by("pk").first()
    local = contact.email.split("@")[0]
    return {
        "email": local[: max(local.find("."), 3) + 3],
        "first": contact.first_name,
        "full": f"{contact.first_name} {contact.last_name}",
        "company": contact.company.split()[0].strip(",") if contact.company else "Acme",
        "nothing": "zqxjv",
    }


def api_paths(now: dt.datetime, terms: dict[str, str], source_id: int) -> list[tuple[str, str]]:
    base = "/api/contacts/"

    def q(**params) -> str:
        return f"{base}?{urlencode(params)}"

    return [
        ("unfiltered", base),
        ("marketing", q(marketing_status="marketing")),
        ("non-marketing", q(marketing_status="non_marketing")),
        ("pending", q(pending="true")),
        ("not pending", q(pending="false")),
        ("source (the smallest)", q(source=source_id)),
        ("lifecycle stage", q(lifecycle_stage="evangelist")),
        ("lead status", q(lead_status="bad_timing")),
        ("score range 80–90", q(lead_score_min=80, lead_score_max=90)),
        ("engaged after (7 days)", q(engaged_after=(now - dt.timedelta(days=7)).isoformat())),
        ("engaged before (60 days)", q(engaged_before=(now - dt.timedelta(days=60)).isoformat())),
        ("search: email prefix", q(search=terms["email"])),
        ("search: first name", q(search=terms["first"])),
        ("search: first and last name", q(search=terms["full"])),
        ("search: company", q(search=terms["company"])),
        ("search: no match", q(search=terms["nothing"])),
        ("marketing + lifecycle + search", q(marketing_status="marketing", lifecycle_stage="lead", search=terms["first"])),
    ]  # fmt: skip


def admin_paths(terms: dict[str, str], source_kind: str) -> list[tuple[str, str]]:
    base = "/admin/contacts/contact/"

    def q(**params) -> str:
        return f"{base}?{urlencode(params)}"

    return [
        ("unfiltered", base),
        ("page 3", q(p=3)),
        ("marketing", q(marketing_status="marketing")),
        ("non-marketing", q(marketing_status="non_marketing")),
        ("pending", q(pending="true")),
        ("settled", q(marketing_status="marketing", pending="false")),
        ("source kind (the smallest)", q(source_kind=source_kind)),
        ("lifecycle stage", q(lifecycle_stage="evangelist")),
        ("lead status", q(lead_status="bad_timing")),
        ("unengaged 90 days", q(unengaged=90)),
        ("search: email prefix", q(q=terms["email"])),
        ("search: first name", q(q=terms["first"])),
        ("search: first and last name", q(q=terms["full"])),
        ("search: company", q(q=terms["company"])),
        ("search: no match", q(q=terms["nothing"])),
    ]


def in_path_order(side: str, entries: dict) -> list[tuple[str, dict]]:
    """A side's ("api", "admin") measured lists in the order they are measured, whatever
    order they were stored in (docs/benchmarks.json sorts its keys)."""
    terms = dict.fromkeys(("email", "first", "full", "company", "nothing"), "")
    paths = (
        api_paths(dt.datetime.now(dt.UTC), terms, 0) if side == "api" else admin_paths(terms, "")
    )
    order = {name: at for at, (name, _) in enumerate(paths)}
    return sorted(entries.items(), key=lambda item: order.get(item[0], len(order)))


def time_path(client, url: str, requests: int = REQUESTS) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # The query log is a bounded deque: once full, a capture would see no new entries.
    connection.queries_log.clear()
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    if response.status_code != 200:
        raise RuntimeError(f"{url} answered {response.status_code}")
    # Read now: every later request starts by emptying the query log (Django's
    # request_started → reset_queries), and `captured_queries` is a slice of that log.
    queries = captured.captured_queries
    # The rows the first page shows: the API's results, the admin's row checkboxes.
    if response.get("Content-Type", "").startswith("application/json"):
        shown = len(response.json()["results"])
    else:
        shown = response.content.count(b'name="_selected_action"')
    slowest = max(queries, key=lambda q: float(q["time"]), default=None)
    for _ in range(WARM_UP - 1):
        client.get(url)
    times, cpu, db = [], [], []
    in_database = [0.0]

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            in_database[0] += time.perf_counter() - started

    with connection.execute_wrapper(timed):
        for _ in range(requests):
            in_database[0] = 0.0
            started, started_cpu = time.perf_counter(), time.process_time()
            client.get(url)
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
            db.append(in_database[0] * 1000)
    return {
        "p50": statistics.median(times),
        "p95": statistics.quantiles(times, n=20, method="inclusive")[18],
        # Where the median request's time goes: this process's CPU (Python: middleware,
        # views, rendering) and the time spent waiting for the database's answers.
        "cpu_p50": statistics.median(cpu),
        "db_p50": statistics.median(db),
        "queries": len(queries),
        "rows": shown,
        "slowest_sql": slowest["sql"] if slowest else "",
    }


def measure(
    client, paths: list[tuple[str, str]], say, label: str, requests=REQUESTS, section: str = "k"
) -> dict:
    out = {}
    for name, url in paths:
        out[name] = {"url": url, **time_path(client, url, requests)}
        say(
            f"{section} {label} {name}: {out[name]['rows']} rows, "
            f"p50 {out[name]['p50']:.1f} ms, p95 {out[name]['p95']:.1f} ms "
            f"(Python {out[name]['cpu_p50']:.1f} ms, database {out[name]['db_p50']:.1f} ms)"
        )
    return out


def explain(sql: str) -> str:
    """The plan of one captured query: EXPLAIN ANALYZE on PostgreSQL, the query plan on SQLite."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
            return "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
        return "\n".join(str(row[-1]) for row in cursor.fetchall())


class _Naive:
    """Out-of-the-box lists: Django's paginator with both counts, DRF's page numbers with
    its count, and no search index (dropped in a transaction rolled back on exit; SQLite
    has none to drop: the search indexes are PostgreSQL's)."""

    def __enter__(self):
        from django.core.paginator import Paginator
        from django.db import connection, transaction
        from rest_framework.pagination import PageNumberPagination

        from contacts.admin import ContactAdmin
        from contacts.api.views import ContactViewSet

        self.saved = (
            ContactAdmin.paginator,
            ContactAdmin.show_full_result_count,
            ContactViewSet.pagination_class,
        )
        ContactAdmin.paginator = Paginator
        ContactAdmin.show_full_result_count = True
        ContactViewSet.pagination_class = PageNumberPagination
        self.atomic = transaction.atomic()
        self.atomic.__enter__()
        if connection.vendor != "postgresql":
            return self
        with connection.cursor() as cursor:
            cursor.execute(EMAIL_PATTERN_INDEX)
            for name in [*SEARCH_INDEXES, *(row[0] for row in cursor.fetchall())]:
                cursor.execute(f"DROP INDEX IF EXISTS {name}")
        return self

    def __exit__(self, *exc):
        from django.db import transaction

        from contacts.admin import ContactAdmin
        from contacts.api.views import ContactViewSet

        transaction.set_rollback(True)
        self.atomic.__exit__(None, None, None)
        (
            ContactAdmin.paginator,
            ContactAdmin.show_full_result_count,
            ContactViewSet.pagination_class,
        ) = self.saved
        return False


def run(options, say) -> dict:
    if getattr(options, "seed_demo", False):
        ensure_demo_data(options.contacts, say)
        loaded = {"data": "seed_demo"}
    else:
        loaded = {"data": "read_data", "load": ensure_read_data(options.contacts, say)}
    return {**loaded, **measure_lists(say, naive=True)}


def measure_lists(
    say, section: str = "k", *, naive: bool = True, terms: dict[str, str] | None = None
) -> dict:
    """Every list of the API and the admin over the contacts in place, and, if `naive`, the
    out-of-the-box baseline (section m times the same lists on SQLite). The search terms
    are `terms`, or taken from the contact in the middle of the table."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core import signals
    from django.db import close_old_connections
    from django.db.models import Count
    from django.test import Client
    from django.utils import timezone

    from contacts.models import Contact, Source

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    # The test client sends request_started/finished, which would close the connection
    # (and the naive baseline's open transaction with it) between requests.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)

    user, _ = get_user_model().objects.get_or_create(
        username="bench-reads", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    now = timezone.now()
    terms = terms or sample_terms()
    smallest = (
        Source.objects.values("pk", "kind")
        .annotate(n=Count("contacts"))
        .filter(n__gt=0)
        .order_by("n", "pk")
        .first()
    )
    api = api_paths(now, terms, smallest["pk"])
    admin = admin_paths(terms, smallest["kind"])
    # The API's second page, through the cursor of the first.
    first = client.get("/api/contacts/").json()
    api.append(("page 2 (cursor)", first["next"].split("testserver", 1)[-1]))

    results = {"contacts": Contact.objects.count(), "terms": terms}
    say(f"{section}: the lists as built")
    results["api"] = measure(client, api, say, "api", section=section)
    results["admin"] = measure(client, admin, say, "admin", section=section)
    results["naive_api"], results["naive_admin"] = {}, {}
    if naive:
        say(f"{section}: the naive baseline (default paginators and counts, no search indexes)")
    with _Naive() if naive else contextlib.nullcontext():
        naive_api = [(name, url) for name, url in api if not name.startswith("page 2")]
        if naive:
            results["naive_api"] = measure(
                client, naive_api, say, "naive api", NAIVE_REQUESTS, section=section
            )
            results["naive_admin"] = measure(
                client, admin, say, "naive admin", NAIVE_REQUESTS, section=section
            )
    worst = max(
        ((side, name, entry) for side in ("api", "admin") for name, entry in results[side].items()),
        key=lambda item: item[2]["p95"],
    )
    results["worst"] = f"{worst[0]}: {worst[1]}"
    results["plan_worst"] = explain(worst[2]["slowest_sql"]) if worst[2]["slowest_sql"] else ""
    return results


def rows(
    k: dict,
    prefix: str = "k.",
    verdicts: tuple[str, str] = ("meets the bar", "MISSES the bar"),
    naive_label: str = "exact counts, no search index",
    split: str = "median Python {cpu:.0f} ms, database {db:.0f} ms",
) -> list[tuple[str, str, str]]:
    """One row a list. Section m gives its own prefix, its words against PostgreSQL's bar,
    its naive baseline's (SQLite has no search index to go without) and its reading of the
    CPU/database split (SQLite runs inside the process)."""
    out = []
    for side, naive_key, title in (
        ("api", "naive_api", "API /api/contacts/"),
        ("admin", "naive_admin", "admin /admin/contacts/contact/"),
    ):
        for name, entry in in_path_order(side, k[side]):
            naive = k[naive_key].get(name)
            ok = entry["p50"] <= P50_BAR and entry["p95"] <= P95_BAR
            queries = f"{entry['queries']} queries; " if entry.get("queries") else ""
            note = (
                queries
                + split.format(cpu=entry["cpu_p50"], db=entry["db_p50"])
                + "; "
                + verdicts[0 if ok else 1]
                + (
                    f"; naive ({naive_label}): p50 {naive['p50']:,.0f} ms, "
                    f"p95 {naive['p95']:,.0f} ms"
                    if naive
                    else ""
                )
            )
            out.append(
                (
                    f"{prefix} {title}, {name} ({k['contacts']:,} contacts)",
                    f"p50 {entry['p50']:.1f} ms, p95 {entry['p95']:.1f} ms",
                    note,
                )
            )
    return out
