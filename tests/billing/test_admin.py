"""The billing admin through the test client: dashboard, read-only rows, the close page,
alerts, approvals and the banner. Every write it makes goes through billing's services.

The clock is frozen at NOW (15 November 2026, 12:00 UTC) so the period, the forecast
and the chart are exact; data in earlier periods is written with the services' `at=`.
"""

import datetime as dt
import re

import pytest
import time_machine
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from billing.admin.chart import usage_chart
from billing.models import (
    Alert,
    BillingPeriod,
    DailyUsage,
    Invoice,
    InvoiceLine,
    Subscription,
)
from billing.money import format_money
from billing.services import billing_close_periods, billing_finalise_invoices
from billing.templatetags.billing_tags import open_alerts_this_period
from contacts.models import Contact
from contacts.status.models import (
    PendingApproval,
    PeriodUsage,
    StatusChange,
    StatusChangeRequest,
)
from contacts.status.results import (
    ChangeHeld,
    StatusSource,
)
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from crm.calendar import BillingCalendar
from tests.conftest import at
from tests.factories import UserFactory, set_guardrails

NOW = at(2026, 11, 15, 12)
NOV_1, OCT_1 = at(2026, 11, 1), at(2026, 10, 1)
SRC = StatusSource("import", name="admin test")

DASHBOARD = reverse("admin:billing_dashboard")
CLOSE = reverse("admin:billing_billingperiod_close")
INDEX = reverse("admin:index")


def url(model: str, view: str, *args) -> str:
    app = "contacts" if model == "pendingapproval" else "billing"
    return reverse(f"admin:{app}_{model}_{view}", args=args)


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def run_action(client, model: str, action: str, ids, query: str = ""):
    return client.post(
        url(model, "changelist") + query,
        {"action": action, "_selected_action": [str(pk) for pk in ids], "index": "0"},
    )


@pytest.fixture(autouse=True)
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def billing(subscription):
    return client_for(UserFactory(username="billing", groups=["Billing admin"]))


@pytest.fixture
def auditor(subscription):
    return client_for(UserFactory(username="auditor", groups=["Auditor"]))


@pytest.fixture
def ops(subscription, marketing_ops):
    return client_for(marketing_ops)


@pytest.fixture
def sales_client(subscription, sales):
    return client_for(sales)


@pytest.fixture
def root(subscription, superuser):
    return client_for(superuser)


@pytest.fixture
def this_period(account, subscription, make_contacts, django_capture_on_commit_callbacks):
    """3,000 marketing on 10 November, 500 more now; 1,600 of the first set to leave.

    live 3,500 = peak; 1 block (headroom 3,500); estimate 102,500; pending 1,600 save
    22,500 (December opens at 1,900, within the tier). The forecast: 3,500 new in the
    last 7 days = 500 a day over 15.5 days left → peak 11,250, 2 blocks, 125,000.
    """
    subscription.spike_threshold = 10_000  # no spike alert: thresholds and blocks only
    subscription.save()
    first = make_contacts(3_000)
    with django_capture_on_commit_callbacks(execute=True):
        contacts_set_marketing(contacts=first, source=SRC, at=at(2026, 11, 10, 9))
        contacts_set_marketing(contacts=make_contacts(500), source=SRC)
        contacts_set_non_marketing(
            contacts=list(first.order_by("pk").values_list("pk", flat=True)[:1_600]), source=SRC
        )
    return first


@pytest.fixture
def october(account, subscription, make_contacts):
    """2,100 marketing from 5 October: October's peak 2,100, one block, 102,500."""
    people = make_contacts(2_100)
    contacts_set_marketing(contacts=people, source=SRC, at=at(2026, 10, 5))
    return people


@pytest.fixture
def closed_october(october):
    billing_close_periods(at=NOW)
    return BillingPeriod.objects.get(start=OCT_1)


def held_approval(make_contacts, *, count=11, limit=10, actor=None) -> PendingApproval:
    set_guardrails(operation_limit=limit)
    people = make_contacts(count)
    with pytest.raises(ChangeHeld):
        contacts_set_marketing(
            contacts=list(people.values_list("pk", flat=True)),
            source=StatusSource("bulk_action", name="Admin bulk action"),
            actor=actor,
            guarded=True,
            idempotency_key=f"held-{count}",
        )
    return PendingApproval.objects.get(idempotency_key=f"held-{count}")


# --- money ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (102_500, "USD", "1,025.00 USD"),
        (5, "EUR", "0.05 EUR"),
        (-22_500, "USD", "-225.00 USD"),
        (0, "SEK", "0.00 SEK"),
        (1_500_000, "JPY", "1,500,000 JPY"),
    ],
)
def test_money_is_formatted_from_minor_units(amount, currency, expected):
    assert format_money(amount, currency) == expected


# --- the dashboard ----------------------------------------------------------------


@pytest.mark.parametrize("who", ["billing", "auditor", "ops"])
def test_dashboard_shows_the_period_figures(request, who, this_period):
    client = request.getfixturevalue(who)

    response = client.get(DASHBOARD)

    assert response.status_code == 200
    assert response.templates[0].name == "admin/billing/dashboard.html"
    html = response.content.decode()
    figures = {
        name: re.search(
            rf'id="figure-{name}">\s*<h3>[^<]*</h3>\s*<div class="value[^"]*">([^<]*)</div>', html
        ).group(1)
        for name in ("live", "peak", "tier", "blocks", "next-update", "pending")
    }
    assert figures == {
        "live": "3,500",
        "peak": "3,500",
        "tier": "2,000",
        "blocks": "1",
        "next-update": "1 Dec 2026",
        "pending": "1,600",
    }
    assert "175.0% used at the peak" in html
    assert "3,500 more before block 2 starts (225.00 USD per 5,000)." in html
    assert "Still billable until 1 Dec 2026; saves 225.00 USD a month from then." in html
    # The estimate and the forecast side by side.
    assert '<td id="estimate-peak">3,500</td><td id="forecast-peak">11,250</td>' in html
    assert '<td id="estimate-total">1,025.00 USD</td><td id="forecast-total">1,250.00 USD</td>' in (
        html
    )
    assert "<td>225.00 USD</td><td>450.00 USD</td>" in html  # overage: 1 block, then 2
    assert "(500 a day) over the 15.5 days left" in html
    # Open alerts: 75/90/98/100% and block 1, fired when 3,000 became marketing.
    assert html.count("Marketing contacts reached") >= 4
    assert "Overage block 1 started: peak 3,000 marketing contacts this period." in html
    assert "<strong>0</strong> changes past the guardrails waiting for approval." in html


def test_dashboard_chart_is_inline_svg_of_the_daily_peak_against_the_tier(billing, this_period):
    response = billing.get(DASHBOARD)
    html = response.content.decode()
    chart = response.context["chart"]

    assert '<svg class="usage-chart" role="img"' in html
    assert "<script" not in html.split('id="usage-chart"')[1].split("</svg>")[0]
    assert [p["label"] for p in chart.periods] == [
        "Dec 2025",
        "Jan 2026",
        "Feb 2026",
        "Mar 2026",
        "Apr 2026",
        "May 2026",
        "Jun 2026",
        "Jul 2026",
        "Aug 2026",
        "Sep 2026",
        "Oct 2026",
        "Nov 2026",
    ]
    assert (chart.first_day, chart.last_day) == (dt.date(2025, 12, 1), dt.date(2026, 11, 30))
    # Two days recorded (10 and 15 November), both above the tier.
    assert [bar["title"] for bar in chart.bars] == [
        "10 Nov 2026: at most 3,000 marketing",
        "15 Nov 2026: at most 3,500 marketing",
    ]
    assert html.count('<rect class="bar over"') == 2
    assert html.count('<line class="boundary"') == 13  # 12 period starts and the end
    assert 'class="tier-label"' in html and ">Tier 2,000</text>" in html
    assert ">7,000: 2 blocks</text>" not in html  # above the axis: 3,500 × 1.08 → 4,000
    assert [tick["label"] for tick in chart.y_ticks] == ["0", "1,000", "2,000", "3,000", "4,000"]
    assert chart.summary[-1]["highest"] == 3_500
    assert all(row["highest"] is None for row in chart.summary[:-1])


def test_chart_marks_block_lines_and_local_period_boundaries(account, subscription):
    account.time_zone = "Europe/Stockholm"
    account.update_day = 15
    account.save()
    DailyUsage.objects.create(day=dt.date(2026, 11, 14), max_count=12_500, became_marketing=10)

    chart = usage_chart(
        calendar=BillingCalendar.for_account(), now=NOW, tier=2_000, block_size=5_000
    )

    # Periods start on the 15th at local midnight: the current one began 15 November.
    assert chart.periods[-1]["label"] == "Nov 2026" and chart.periods[0]["label"] == "Dec 2025"
    assert chart.first_day == dt.date(2025, 12, 15)
    assert chart.summary[-2]["highest"] == 12_500  # 14 November is in the period before
    assert [line["label"] for line in chart.block_lines] == ["7,000: 2 blocks", "12,000: 3 blocks"]


def test_dashboard_of_an_empty_account_renders(billing):
    response = billing.get(DASHBOARD)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<td id="estimate-total">800.00 USD</td>' in html
    assert "No unacknowledged alerts this period." in html
    assert response.context["chart"].bars == []


def test_dashboard_is_refused_to_sales(sales_client, this_period):
    assert sales_client.get(DASHBOARD).status_code == 403


def test_dashboard_is_listed_first_under_billing(auditor, sales_client):
    html = auditor.get(INDEX).content.decode()
    billing_section = html.split('class="app-billing module')[1].split("</table>")[0]
    rows = re.findall(r'<th scope="row" id="billing-(\w+)">', billing_section)
    assert rows[0] == "dashboard"
    assert DASHBOARD == "/admin/billing/dashboard/"
    assert f'<a href="{DASHBOARD}">Dashboard</a>' in billing_section
    assert DASHBOARD not in sales_client.get(INDEX).content.decode()


# --- read-only rows -----------------------------------------------------------------

MODELS = {
    "billingperiod": BillingPeriod,
    "invoice": Invoice,
    "line": InvoiceLine,
    "alert": Alert,
    "dailyusage": DailyUsage,
    "pendingapproval": PendingApproval,
}

READ_ONLY = ["billingperiod", "invoice", "alert", "dailyusage", "pendingapproval"]


@pytest.fixture
def one_of_each(closed_october, make_contacts, superuser):
    held_approval(make_contacts, actor=superuser)
    DailyUsage.objects.create(day=dt.date(2026, 10, 5), max_count=2_100, became_marketing=2_100)
    Alert.objects.create(
        period_start=NOV_1, kind="threshold", threshold=75, fired_at=NOW, message="75%"
    )
    return {
        "billingperiod": closed_october.pk,
        "invoice": closed_october.invoice.pk,
        "alert": Alert.objects.get().pk,
        "dailyusage": DailyUsage.objects.first().pk,
        "pendingapproval": PendingApproval.objects.get().pk,
    }


@pytest.mark.parametrize("model", READ_ONLY)
def test_billing_rows_are_read_only_even_for_superusers(root, one_of_each, model):
    pk = one_of_each[model]
    counts = {name: m.objects.count() for name, m in MODELS.items()}

    assert root.get(url(model, "changelist")).status_code == 200
    page = root.get(url(model, "change", pk))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="_save"' not in html and 'name="_continue"' not in html
    assert root.get(url(model, "add")).status_code == 403
    assert root.post(url(model, "add"), {}).status_code == 403
    assert root.post(url(model, "change", pk), {}).status_code == 403
    assert root.post(url(model, "delete", pk), {"post": "yes"}).status_code == 403
    changelist = root.get(url(model, "changelist"))
    action_form = changelist.context["action_form"]
    choices = [v for v, _ in action_form.fields["action"].choices] if action_form else []
    assert "delete_selected" not in choices
    assert {name: m.objects.count() for name, m in MODELS.items()} == counts


def test_a_final_invoice_cannot_be_edited_in_the_admin(root, closed_october):
    billing_finalise_invoices(at=NOW + dt.timedelta(days=1))
    invoice = Invoice.objects.get(period=closed_october)
    assert invoice.status == "final"
    lines_before = list(invoice.lines.values_list("kind", "amount", "description"))

    page = root.get(url("invoice", "change", invoice.pk))
    html = page.content.decode()
    assert 'name="_save"' not in html
    assert "This invoice is final: it never changes." in html
    assert "1,025.00 USD" in html and "800.00 USD" in html and "225.00 USD" in html
    assert "Block size: 5,000" in html  # the line's inputs
    assert 'name="lines-0-amount"' not in html

    response = root.post(
        url("invoice", "change", invoice.pk),
        {
            "number": "HACKED",
            "total": "1",
            "status": "draft",
            "lines-TOTAL_FORMS": "1",
            "lines-INITIAL_FORMS": "1",
            "lines-0-id": str(invoice.lines.first().pk),
            "lines-0-amount": "0",
        },
    )

    assert response.status_code == 403
    invoice.refresh_from_db()
    assert (invoice.number, invoice.total, invoice.status) == ("INV-20261001", 102_500, "final")
    assert list(invoice.lines.values_list("kind", "amount", "description")) == lines_before


def test_periods_list_shows_counts_discrepancy_and_invoice(billing, october):
    PeriodUsage.objects.filter(period_start=OCT_1).update(peak_count=2_101)
    billing_close_periods(at=NOW)  # held: counters say 2,101, the ledger 2,100
    html = billing.get(url("billingperiod", "changelist")).content.decode()
    assert "Ledger replay peak 2,100 ≠ counter peak 2,101: no invoice until they agree" in html
    assert 'id="close-periods-link"' in html

    PeriodUsage.objects.filter(period_start=OCT_1).update(peak_count=2_100)
    billing_close_periods(at=NOW)
    period = BillingPeriod.objects.get(start=OCT_1)
    html = billing.get(url("billingperiod", "changelist")).content.decode()
    invoice_url = url("invoice", "change", period.invoice.pk)
    assert f'<a href="{invoice_url}">INV-20261001</a> (draft, 1,025.00 USD)' in html


def test_the_close_button_is_only_for_users_who_may_close(auditor, closed_october):
    html = auditor.get(url("billingperiod", "changelist")).content.decode()
    assert 'id="close-periods-link"' not in html


# --- the close page -------------------------------------------------------------------


def ledger_state() -> tuple:
    return (
        StatusChange.objects.count(),
        StatusChangeRequest.objects.count(),
        list(
            PeriodUsage.objects.order_by("period_start").values_list("period_start", "peak_count")
        ),
        BillingPeriod.objects.count(),
        Invoice.objects.count(),
        InvoiceLine.objects.count(),
        Contact.objects.filter(marketing_status="marketing", marketing_until__isnull=False).count(),
    )


def test_close_page_dry_run_writes_nothing_then_confirm_closes(billing, october):
    leaving = list(october.order_by("pk").values_list("pk", flat=True)[:100])
    contacts_set_non_marketing(contacts=leaving, source=SRC, at=at(2026, 10, 20))
    before = ledger_state()

    page = billing.get(CLOSE)

    assert page.status_code == 200
    assert ledger_state() == before
    html = page.content.decode()
    assert "A dry run: nothing has been written yet." in html
    assert [
        (r["outcome"].status, r["outcome"].peak_count, r["total"]) for r in page.context["rows"]
    ] == [("would_close", 2_100, "1,025.00 USD")]
    assert "<td>1 Oct 2026 – 1 Nov 2026</td>" in html
    assert 'value="Close 1 period"' in html

    done = billing.post(CLOSE)

    assert done.status_code == 200
    invoice = Invoice.objects.get()
    assert (invoice.number, invoice.total, invoice.status) == ("INV-20261001", 102_500, "draft")
    assert BillingPeriod.objects.get().peak_count == 2_100
    assert (
        Contact.objects.filter(marketing_status="marketing", marketing_until__isnull=False).count()
        == 0
    )  # rollover applied
    assert [(r["outcome"].status, r["outcome"].invoice_number) for r in done.context["rows"]] == [
        ("closed", "INV-20261001")
    ]
    assert messages_of(done) == ["Closed 1 period: INV-20261001 written."]

    again = billing.post(CLOSE)
    assert again.context["rows"] == [] and Invoice.objects.count() == 1
    assert messages_of(again)[-1] == "No period had ended unclosed; nothing to close."


@pytest.mark.parametrize("who", ["auditor", "ops", "sales_client"])
def test_close_page_is_refused_without_change_subscription(request, who, october):
    client = request.getfixturevalue(who)
    before = ledger_state()
    assert client.get(CLOSE).status_code == 403
    assert client.post(CLOSE).status_code == 403
    assert ledger_state() == before


# --- alerts ----------------------------------------------------------------------------


def test_acknowledge_action(billing, this_period):
    open_alerts = list(Alert.objects.filter(acknowledged_at__isnull=True).order_by("pk"))
    assert len(open_alerts) == 5
    chosen = [open_alerts[0].pk, open_alerts[1].pk]

    response = run_action(billing, "alert", "acknowledge_action", chosen)

    assert response.status_code == 302
    assert set(
        Alert.objects.filter(acknowledged_at__isnull=False).values_list("pk", "acknowledged_at")
    ) == {(chosen[0], NOW), (chosen[1], NOW)}
    assert messages_of(response) == ["2 alerts acknowledged."]
    again = run_action(billing, "alert", "acknowledge_action", chosen)
    assert messages_of(again)[-1] == "0 alerts acknowledged; 2 already were."


def test_acknowledging_from_the_not_yet_list_counts_what_was_chosen(billing, this_period):
    open_ids = list(Alert.objects.filter(acknowledged_at__isnull=True).values_list("pk", flat=True))

    response = run_action(billing, "alert", "acknowledge_action", open_ids, "?acknowledged=no")

    assert messages_of(response) == [f"{len(open_ids)} alerts acknowledged."]
    assert not Alert.objects.filter(acknowledged_at__isnull=True).exists()


@pytest.mark.parametrize("who", ["auditor", "ops"])
def test_acknowledge_is_refused_without_change_alert(request, who, this_period):
    client = request.getfixturevalue(who)
    ids = list(Alert.objects.values_list("pk", flat=True))

    page = client.get(url("alert", "changelist"))
    assert page.status_code == 200
    assert page.context["action_form"] is None
    run_action(client, "alert", "acknowledge_action", ids)

    assert not Alert.objects.filter(acknowledged_at__isnull=False).exists()


def test_alert_filters_this_period_and_unacknowledged(billing, this_period):
    Alert.objects.create(
        period_start=OCT_1, kind="threshold", threshold=75, fired_at=at(2026, 10, 5), message="old"
    )
    Alert.objects.filter(kind="block").update(acknowledged_at=NOW)
    response = billing.get(url("alert", "changelist") + "?acknowledged=no&period=current")
    assert sorted(a.threshold for a in response.context["cl"].result_list) == [75, 90, 98, 100]


# --- approvals -----------------------------------------------------------------------


def test_approval_detail_shows_the_reason_and_cost(billing, account, make_contacts):
    approval = held_approval(make_contacts)
    html = billing.get(url("pendingapproval", "change", approval.pk)).content.decode()
    assert "it would make 11 contacts marketing, more than the per-operation limit of 10" in html
    assert "800.00 USD → 800.00 USD" in html and "no extra cost" in html
    assert "11 contacts" in html
    assert 'id="approval-decision-form"' in html


def test_approve_action_runs_the_held_change(billing, account, make_contacts):
    approval = held_approval(make_contacts)
    assert not StatusChange.objects.exists()

    response = run_action(billing, "pendingapproval", "approve_action", [approval.pk])

    assert response.status_code == 302
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by.username) == ("approved", "billing")
    assert StatusChange.objects.filter(action="upgrade").count() == 11
    assert Contact.objects.filter(marketing_status="marketing").count() == 11
    assert messages_of(response) == [
        f"Approval #{approval.pk} approved and run: 11 contacts are now marketing, "
        "0 pending downgrades were cancelled. Live count 11, this period's peak 11."
    ]
    again = run_action(billing, "pendingapproval", "approve_action", [approval.pk])
    assert messages_of(again)[-1] == (
        f"Approval #{approval.pk} was already decided (approved and run); nothing was done."
    )
    assert StatusChange.objects.count() == 11


def test_reject_action_does_not_run_the_change(billing, account, make_contacts):
    approval = held_approval(make_contacts)

    response = run_action(billing, "pendingapproval", "reject_action", [approval.pk])

    approval.refresh_from_db()
    assert approval.status == "rejected"
    assert not StatusChange.objects.exists()
    assert not Contact.objects.filter(marketing_status="marketing").exists()
    assert messages_of(response) == [f"Approval #{approval.pk} rejected: nothing was changed."]


def test_detail_page_buttons_approve_and_reject(billing, account, make_contacts):
    first = held_approval(make_contacts, count=11)
    second = held_approval(make_contacts, count=12)
    decide = url("pendingapproval", "decide", first.pk)

    assert billing.get(decide).status_code == 405
    response = billing.post(decide, {"decision": "approve"})
    assert response.status_code == 302
    assert response["Location"] == url("pendingapproval", "change", first.pk)
    billing.post(url("pendingapproval", "decide", second.pk), {"decision": "reject"})

    assert PendingApproval.objects.get(pk=first.pk).status == "approved"
    assert PendingApproval.objects.get(pk=second.pk).status == "rejected"
    assert StatusChange.objects.count() == 11
    page = billing.get(url("pendingapproval", "change", first.pk)).content.decode()
    assert 'id="approval-decision-form"' not in page  # decided: no buttons


@pytest.mark.parametrize("who", ["auditor", "ops"])
def test_approval_actions_are_refused_without_approve_overage(request, who, account, make_contacts):
    client = request.getfixturevalue(who)
    approval = held_approval(make_contacts)

    page = client.get(url("pendingapproval", "changelist"))
    assert page.status_code == 200
    assert page.context["action_form"] is None
    detail = client.get(url("pendingapproval", "change", approval.pk)).content.decode()
    assert 'id="approval-decision-form"' not in detail
    run_action(client, "pendingapproval", "approve_action", [approval.pk])
    run_action(client, "pendingapproval", "reject_action", [approval.pk])
    decide = url("pendingapproval", "decide", approval.pk)
    assert client.post(decide, {"decision": "approve"}).status_code == 403
    assert client.post(decide, {"decision": "reject"}).status_code == 403

    approval.refresh_from_db()
    assert (approval.status, approval.decided_by, approval.decided_at) == ("pending", None, None)
    assert not StatusChange.objects.exists()
    assert not Contact.objects.filter(marketing_status="marketing").exists()


# --- the alert banner -----------------------------------------------------------------


def test_banner_lists_this_periods_open_alerts_on_every_admin_page(ops, this_period):
    Alert.objects.create(
        period_start=OCT_1, kind="spike", threshold=1, fired_at=at(2026, 10, 5), message="Old one"
    )
    Alert.objects.filter(kind="block").update(acknowledged_at=NOW)

    for page in (INDEX, reverse("admin:contacts_contact_changelist"), url("alert", "changelist")):
        html = ops.get(page).content.decode()
        assert 'id="billing-alert-banner"' in html, page
        banner = html.split('id="billing-alert-banner"')[1].split("</div>")[0]
        text = " ".join(re.sub(r"<[^>]+>", " ", banner).split())
        assert "4 billing alerts this period." in text
        assert "75%, 90%, 98% and 100% of the tier reached." in text
        assert "Now: peak 3,500 of 2,000 included, 3,500 marketing contacts today." in text
        assert "block" not in text and "Old one" not in text
        assert "3,000" not in text  # the peak the first alerts saw
        assert url("alert", "changelist") + "?acknowledged=no&amp;period=current" in banner
        assert f'href="{DASHBOARD}"' in banner


def test_the_banner_shows_todays_peak_not_the_one_the_alerts_saw(ops, this_period, make_contacts):
    contacts_set_marketing(contacts=make_contacts(5), source=SRC)

    banner = ops.get(INDEX).content.decode().split('id="billing-alert-banner"')[1]

    assert "Now: peak 3,505 of 2,000 included, 3,505 marketing contacts today." in " ".join(
        re.sub(r"<[^>]+>", " ", banner.split("</div>")[0]).split()
    )
    assert "overage block 1 started" in banner


def test_banner_is_not_shown_to_users_who_cannot_view_alerts(sales_client, this_period):
    assert 'id="billing-alert-banner"' not in sales_client.get(INDEX).content.decode()


def test_dashboard_lists_the_alerts_itself_without_the_banner(ops, this_period):
    html = ops.get(DASHBOARD).content.decode()
    assert 'id="billing-alert-banner"' not in html
    assert html.count("Overage block 1 started") == 1


def test_banner_is_one_query_and_matches_the_selector(this_period, django_assert_num_queries):
    from billing.selectors import billing_alerts_open
    from contacts.status.selectors import usage_current

    with django_assert_num_queries(1):
        alerts = open_alerts_this_period()
    expected = billing_alerts_open(period_start=usage_current().period_start)
    assert sorted(a.pk for a in alerts) == sorted(a.pk for a in expected)
    assert len(alerts) == 5


def test_banner_does_not_break_pages_without_any_data(db, superuser):
    assert not Subscription.objects.exists() and not PeriodUsage.objects.exists()
    client = client_for(superuser)
    response = client.get(INDEX)
    assert response.status_code == 200
    assert 'id="billing-alert-banner"' not in response.content.decode()
    assert client.get(DASHBOARD).status_code == 200


def test_cost_summary_of_a_preview_within_the_billed_blocks():
    from billing.templatetags.billing_tags import cost_summary

    summary = cost_summary(
        {
            "peak_before": 864,
            "peak_after": 872,
            "blocks_before": 1,
            "blocks_after": 1,
            "total_before": 85_000,
            "total_after": 85_000,
            "invoice_delta": 0,
            "headroom_before": 36,
            "currency": "USD",
        }
    )
    assert summary == {
        "adds_blocks": 0,
        "in_tier": False,
        "room_left": 28,
        "delta": 0,
        "delta_display": "0.00 USD",
        "before": "850.00 USD",
        "after": "850.00 USD",
    }


def _queries(client, path) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert client.get(path).status_code == 200
    return len(captured)


def _period(month: int, *, invoiced: bool) -> None:
    start, end = at(2026, month, 1), at(2026, month + 1, 1)
    period = BillingPeriod.objects.create(
        start=start,
        end=end,
        status="closed",
        opening_count=1,
        closing_count=1,
        peak_count=1,
        counter_peak_count=1,
        closed_at=end,
    )
    if invoiced:
        Invoice.objects.create(
            period=period,
            number=f"INV-{start:%Y%m%d}",
            currency="USD",
            total=80_000,
            created_at=end,
            finalise_after=end,
        )


def test_billing_changelists_do_not_query_per_row(root, account, make_contacts, superuser):
    _period(1, invoiced=True)
    held_approval(make_contacts, count=11, actor=superuser)
    pages = [url(m, "changelist") for m in ("billingperiod", "invoice", "pendingapproval")]
    for page in pages:  # the sidebar, rendered once a minute, is in place for both counts
        root.get(page)
    few = [_queries(root, page) for page in pages]

    for month in range(2, 8):
        _period(month, invoiced=True)
    for count in range(12, 18):
        held_approval(make_contacts, count=count, actor=superuser)
    assert Invoice.objects.count() == 7 and PendingApproval.objects.count() == 7

    assert [_queries(root, page) for page in pages] == few
