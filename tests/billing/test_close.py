import datetime as dt

import pytest
import time_machine
from django.core import mail

from billing.alerts import billing_check_alerts
from billing.models import (
    Alert,
    BillingPeriod,
    FinalInvoiceError,
    Invoice,
    InvoiceLine,
)
from billing.services import (
    billing_close_periods,
    billing_finalise_invoices,
)
from billing.tasks import close_periods
from contacts.hooks import UsageChange
from contacts.models import Contact
from contacts.status.models import (
    PeriodUsage,
    StatusChange,
)
from contacts.status.results import StatusSource
from contacts.status.services import (
    contacts_delete,
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from tests.conftest import at

SRC = StatusSource("import", name="billing test")
NOV_1, DEC_1, JAN_1 = at(2026, 11, 1), at(2026, 12, 1), at(2027, 1, 1)


def month_of_activity(make_contacts):
    """1,900 marketing in October; in November +300, 400 pending, 50 deleted, +4,000."""
    opening = make_contacts(1_900)
    contacts_set_marketing(contacts=opening, source=SRC, at=at(2026, 10, 20))
    contacts_set_marketing(contacts=make_contacts(300), source=SRC, at=at(2026, 11, 2))
    leaving = list(opening.order_by("pk").values_list("pk", flat=True)[:400])
    contacts_set_non_marketing(contacts=leaving, source=SRC, at=at(2026, 11, 5))
    contacts_delete(
        contacts=list(opening.order_by("-pk").values_list("pk", flat=True)[:50]), at=at(2026, 11, 8)
    )
    contacts_set_marketing(contacts=make_contacts(4_000), source=SRC, at=at(2026, 11, 20))


def test_closing_a_month_writes_one_correct_invoice(account, subscription, make_contacts):
    month_of_activity(make_contacts)

    outcomes = billing_close_periods(as_of=DEC_1, at=at(2026, 12, 1, 1))

    assert [(o.period_start, o.status) for o in outcomes] == [
        (at(2026, 10, 1), "closed"),
        (NOV_1, "closed"),
    ]
    november = BillingPeriod.objects.get(start=NOV_1)
    assert (november.opening_count, november.peak_count, november.closing_count) == (
        1_900,
        6_150,
        5_750 + 400,
    )
    invoice = november.invoice
    assert (invoice.status, invoice.total, invoice.currency) == ("draft", 102_500, "USD")
    lines = list(invoice.lines.values_list("kind", "amount", "details"))
    assert lines[0][:2] == ("base", 80_000)
    assert lines[1] == (
        "overage",
        22_500,
        {"included": 2_000, "peak": 6_150, "block_size": 5_000, "block_price": 22_500, "blocks": 1},
    )
    assert sum(amount for _, amount, _ in lines) == invoice.total
    # The rollover applied November's 400 downgrades and December opened without them.
    assert (
        Contact.objects.filter(marketing_status="marketing", marketing_until__isnull=False).count()
        == 0
    )
    assert PeriodUsage.objects.get(period_start=DEC_1).opening_count == 5_750


def test_closing_twice_gives_one_invoice(account, subscription, make_contacts):
    month_of_activity(make_contacts)
    billing_close_periods(as_of=DEC_1, at=at(2026, 12, 1, 1))

    again = billing_close_periods(as_of=DEC_1, at=at(2026, 12, 1, 2))

    assert again == []
    assert Invoice.objects.count() == 2
    assert StatusChange.objects.filter(action="rollover").count() == 400


def test_a_dry_run_writes_nothing(account, subscription, make_contacts):
    month_of_activity(make_contacts)
    ledger = StatusChange.objects.count()

    outcomes = billing_close_periods(as_of=DEC_1, dry_run=True, at=at(2026, 12, 1, 1))

    assert [(o.status, o.peak_count, o.total) for o in outcomes][-1] == (
        "would_close",
        6_150,
        102_500,
    )
    assert not BillingPeriod.objects.exists() and not Invoice.objects.exists()
    assert StatusChange.objects.count() == ledger


def test_a_disagreement_between_ledger_and_counters_holds_the_period(
    account, subscription, make_contacts
):
    month_of_activity(make_contacts)
    PeriodUsage.objects.filter(period_start=NOV_1).update(peak_count=6_151)

    outcomes = billing_close_periods(as_of=DEC_1, at=at(2026, 12, 1, 1))

    assert outcomes[-1].status == "held"
    held = BillingPeriod.objects.get(start=NOV_1)
    assert held.status == "discrepancy"
    assert held.discrepancy == {"ledger_peak": 6_150, "counter_peak": 6_151}
    assert not Invoice.objects.filter(period=held).exists()
    assert Alert.objects.filter(kind="discrepancy", period_start=NOV_1).count() == 1

    PeriodUsage.objects.filter(period_start=NOV_1).update(peak_count=6_150)  # repaired
    assert billing_close_periods(as_of=DEC_1, at=at(2026, 12, 1, 2))[-1].status == "closed"
    assert Invoice.objects.get(period__start=NOV_1).total == 102_500


def test_invoices_stay_drafts_for_the_grace_window_then_never_change(
    account, subscription, make_contacts, settings
):
    settings.BILLING_GRACE_HOURS = 6
    month_of_activity(make_contacts)
    billing_close_periods(as_of=DEC_1, at=at(2026, 12, 1, 1))

    assert billing_finalise_invoices(at=at(2026, 12, 1, 6, 59)) == 0
    assert billing_finalise_invoices(at=at(2026, 12, 1, 7)) == 2

    invoice = Invoice.objects.get(period__start=NOV_1)
    assert (invoice.status, invoice.finalised_at) == ("final", at(2026, 12, 1, 7))
    invoice.total = 1
    with pytest.raises(FinalInvoiceError):
        invoice.save()
    line = invoice.lines.first()
    line.amount = 0
    with pytest.raises(FinalInvoiceError):
        line.save()
    with pytest.raises(FinalInvoiceError):
        invoice.delete()
    assert Invoice.objects.get(pk=invoice.pk).total == 102_500


def test_a_late_change_to_a_final_period_becomes_an_adjustment_on_the_next_invoice(
    account, subscription, make_contacts
):
    month_of_activity(make_contacts)
    billing_close_periods(as_of=DEC_1, at=at(2026, 12, 1, 1))
    billing_finalise_invoices(at=at(2026, 12, 2))
    # A change recorded late, effective in November: 1,000 more marketing contacts then.
    late = make_contacts(1_000)
    request = StatusChange.objects.first().request
    StatusChange.objects.bulk_create(
        StatusChange(
            contact=c,
            request=request,
            action="upgrade",
            from_status="non_marketing",
            to_status="marketing",
            requested_at=at(2026, 12, 3),
            effective_at=at(2026, 11, 21),
            delta=1,
            source_type="import",
        )
        for c in late
    )
    # December's counters know nothing of it, so reflect it there to keep December consistent.
    StatusChange.objects.bulk_create(
        StatusChange(
            contact=c,
            request=request,
            action="deleted",
            from_status="marketing",
            to_status="none",
            requested_at=at(2026, 12, 3),
            effective_at=at(2026, 11, 30),
            delta=-1,
            source_type="deletion",
        )
        for c in late
    )

    billing_close_periods(as_of=JAN_1, at=at(2027, 1, 1, 1))

    december = Invoice.objects.get(period__start=DEC_1)
    adjustment = december.lines.get(kind="adjustment")
    assert adjustment.amount == 22_500  # 7,150 needs a second block
    assert adjustment.details["billed_peak"] == 6_150 and adjustment.details["peak"] == 7_150
    assert december.total == sum(december.lines.values_list("amount", flat=True))
    assert Invoice.objects.get(period__start=NOV_1).total == 102_500  # unchanged
    billing_close_periods(as_of=JAN_1, at=at(2027, 1, 1, 2))
    assert InvoiceLine.objects.filter(kind="adjustment").count() == 1


def change(peak, *, period_start=NOV_1, became=0, when=None, live=None):
    return UsageChange(
        operation="set_marketing",
        at=when or at(2026, 11, 10),
        day=(when or at(2026, 11, 10)).date(),
        period_start=period_start,
        live_count=peak if live is None else live,
        peak_count=peak,
        became_marketing=became,
    )


def test_threshold_alerts_fire_once_at_the_crossing_and_rearm_next_period(account, subscription):
    assert billing_check_alerts(change=change(1_499)) == []
    fired = billing_check_alerts(change=change(1_500))
    assert [(a.kind, a.threshold) for a in fired] == [("threshold", 75)]
    assert len(mail.outbox) == 0  # sent after commit
    assert billing_check_alerts(change=change(1_600)) == []
    fired = billing_check_alerts(change=change(7_001))
    assert [(a.kind, a.threshold) for a in fired] == [
        ("threshold", 90),
        ("threshold", 98),
        ("threshold", 100),
        ("block", 1),
        ("block", 2),
    ]
    assert Alert.objects.filter(period_start=NOV_1).count() == 6
    again = billing_check_alerts(change=change(1_500, period_start=DEC_1, when=at(2026, 12, 2)))
    assert [(a.kind, a.threshold) for a in again] == [("threshold", 75)]


def test_alerts_are_emailed_to_the_recipients(
    account, subscription, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        billing_check_alerts(change=change(2_001))
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["billing@example.com", "cfo@example.com"]
    assert "100% of the tier" in mail.outbox[0].body and "block 1" in mail.outbox[0].body


def test_a_spike_alert_fires_when_many_become_marketing_within_an_hour(
    account, subscription, make_contacts, django_capture_on_commit_callbacks
):
    subscription.spike_threshold = 50
    subscription.save()
    with django_capture_on_commit_callbacks(execute=True):
        contacts_set_marketing(contacts=make_contacts(30), source=SRC, at=at(2026, 11, 10, 9, 10))
        contacts_set_marketing(contacts=make_contacts(30), source=SRC, at=at(2026, 11, 10, 10, 20))
    spikes = Alert.objects.filter(kind="spike")
    assert spikes.count() == 0  # 9:10 and 10:20 are more than an hour apart
    with django_capture_on_commit_callbacks(execute=True):
        contacts_set_marketing(contacts=make_contacts(30), source=SRC, at=at(2026, 11, 10, 10, 40))
    assert spikes.count() == 1


def test_after_the_hours_spike_alert_further_upgrades_do_not_count_the_ledger_again(
    account, subscription, make_contacts, django_capture_on_commit_callbacks
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    subscription.spike_threshold = 5
    subscription.save()
    with django_capture_on_commit_callbacks(execute=True):
        contacts_set_marketing(contacts=make_contacts(10), source=SRC, at=at(2026, 11, 10, 9, 10))
    assert Alert.objects.filter(kind="spike").count() == 1
    with (
        CaptureQueriesContext(connection) as queries,
        django_capture_on_commit_callbacks(execute=True),
    ):
        contacts_set_marketing(contacts=make_contacts(3), source=SRC, at=at(2026, 11, 10, 9, 20))
    ledger = StatusChange._meta.db_table
    # The spike's exact count: upgrades of the last hour in the ledger.
    counts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT COUNT(*)")]
    assert [sql for sql in counts if ledger in sql] == []
    assert Alert.objects.filter(kind="spike").count() == 1


def test_the_daily_snapshot_keeps_the_days_maximum(
    account, subscription, make_contacts, django_capture_on_commit_callbacks
):
    from billing.models import DailyUsage

    people = make_contacts(10)
    with django_capture_on_commit_callbacks(execute=True):
        contacts_set_marketing(contacts=people, source=SRC, at=at(2026, 11, 10, 9))
        contacts_delete(
            contacts=list(people.values_list("pk", flat=True)[:4]), at=at(2026, 11, 10, 10)
        )
    day = DailyUsage.objects.get(day=dt.date(2026, 11, 10))
    assert (day.max_count, day.became_marketing) == (10, 10)


def test_three_months_of_time_travel_through_the_celery_task(account, subscription, make_contacts):
    with time_machine.travel(at(2026, 9, 10), tick=False):
        contacts_set_marketing(contacts=make_contacts(2_500), source=SRC)
    with time_machine.travel(at(2026, 10, 15), tick=False):
        contacts_set_marketing(contacts=make_contacts(5_000), source=SRC)
    with time_machine.travel(at(2026, 11, 15), tick=False):
        contacts_set_non_marketing(contacts=Contact.objects.all(), source=SRC)
    with time_machine.travel(at(2026, 12, 1, 0, 30), tick=False):
        result = close_periods.delay().get()

    assert [(r["period_start"][:10], r["status"], r["peak_count"], r["total"]) for r in result] == [
        ("2026-09-01", "closed", 2_500, 80_000 + 22_500),
        ("2026-10-01", "closed", 7_500, 80_000 + 2 * 22_500),
        ("2026-11-01", "closed", 7_500, 80_000 + 2 * 22_500),
    ]
    assert PeriodUsage.objects.get(period_start=DEC_1).opening_count == 0
