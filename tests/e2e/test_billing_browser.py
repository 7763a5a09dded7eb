"""Billing in a real browser, over demo data: the dashboard with its chart, and closing
the period that ended, a dry run first."""

from django.utils import timezone

from billing.models import BillingPeriod, DailyUsage, Invoice
from billing.money import format_money
from billing.selectors import billing_usage
from billing.services import billing_close_periods
from tests.e2e.flows import count_text


def test_the_billing_dashboard_shows_the_figures_and_the_chart(page, login, demo, shot):
    usage = billing_usage(at=timezone.now())
    currency = usage["currency"]
    login(username="billing", groups=["Billing admin"])
    with page.expect_navigation():
        page.click("#home-billing a[href$='/admin/billing/dashboard/']")
    shot("dashboard")

    def figure(name: str) -> str:
        return page.inner_text(f"#figure-{name} .value")

    assert [figure(name) for name in ("live", "peak", "tier", "pending")] == [
        count_text(usage["live_count"]),
        count_text(usage["peak_count"]),
        count_text(usage["included_contacts"]),
        count_text(usage["pending_downgrades"]),
    ]
    assert page.inner_text("#estimate-total") == format_money(usage["estimate"]["total"], currency)
    assert page.inner_text("#forecast-total") == format_money(usage["forecast"]["total"], currency)

    # One bar a day with a change (the demo's history lies within the chart's periods),
    # and the tier's line.
    chart = page.locator("svg.usage-chart")
    assert chart.is_visible()
    days = DailyUsage.objects.count()
    assert days > 0
    assert chart.locator("rect.bar").count() == days
    assert chart.locator("line.tier").count() == 1
    page.click("#chart-data summary")
    assert page.is_visible("#chart-data table")
    shot("chart-numbers")


def test_the_ended_period_is_closed_after_a_dry_run(page, login, demo, shot):
    expected = billing_close_periods(dry_run=True)
    assert [outcome.status for outcome in expected] == ["would_close"]
    # The demo's earlier months are closed already: only the one left open is new.
    periods_before = set(BillingPeriod.objects.values_list("pk", flat=True))
    invoices_before = set(Invoice.objects.values_list("pk", flat=True))
    goto = login(username="billing", groups=["Billing admin"])
    goto("/admin/billing/billingperiod/")
    shot("periods")

    with page.expect_navigation():
        page.click("#close-periods-link")
    shot("dry-run")
    rows = page.locator("#close-outcomes tbody tr")
    assert rows.count() == 1
    assert rows.first.get_attribute("class") == "would_close"
    assert page.inner_text("#close-outcomes tbody td.num >> nth=0") == count_text(
        expected[0].peak_count
    )
    assert set(BillingPeriod.objects.values_list("pk", flat=True)) == periods_before
    assert set(Invoice.objects.values_list("pk", flat=True)) == invoices_before

    with page.expect_navigation():
        page.click("#close-periods-form input[type=submit]")
    shot("closed")
    invoice = Invoice.objects.exclude(pk__in=invoices_before).get()
    assert invoice.period.peak_count == expected[0].peak_count
    assert rows.count() == 1
    assert rows.first.get_attribute("class") == "closed"
    assert invoice.number in rows.first.inner_text()
    assert format_money(invoice.total, invoice.currency) in rows.first.inner_text()
    assert page.is_visible(".messagelist .success")

    with page.expect_navigation():
        page.click("a[href$='/admin/billing/invoice/']")
    with page.expect_navigation():
        page.click(f"#result_list a:text-is('{invoice.number}')")
    shot("invoice")
    assert page.locator(".inline-related tbody tr, .inline-group tbody tr").count() >= 1

    # Nothing is left to close: the dry run says so, and a second close writes nothing.
    goto("/admin/billing/billingperiod/close/")
    shot("nothing-left")
    assert page.is_visible("#nothing-to-close")
    assert Invoice.objects.count() == len(invoices_before) + 1
