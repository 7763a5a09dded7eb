"""The billing commands: close_billing_periods, billing_report, verify_billing.

The data is the month of EXAMPLES.md §1 — update day 15, Europe/Stockholm, 2,000
included, blocks of 5,000 at 22500, base 80000 — so the figures are the worked
example's: peak 6,150, invoice 102500. The commands read the present from
`timezone.now()`; `time_machine` sets it.
"""

import csv
import datetime as dt
import io
import json
import zoneinfo

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError

from billing import services
from billing.management.commands.billing_report import top_sources
from billing.models import BillingPeriod, Invoice
from billing.services import billing_close_periods
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
from crm.models import Account

STOCKHOLM = zoneinfo.ZoneInfo("Europe/Stockholm")


def local(year, month, day, hour=0, minute=0):
    return dt.datetime(year, month, day, hour, minute, tzinfo=STOCKHOLM)


# [2026-10-15, 2026-11-15) and P = [2026-11-15, 2026-12-15), Stockholm midnights.
PREV_START, P_START, P_END = local(2026, 10, 15), local(2026, 11, 15), local(2026, 12, 15)
NEXT_END = local(2027, 1, 15)

OCTOBER_IMPORT = StatusSource("import", id="1", name="October import")
NOVEMBER_IMPORT = StatusSource("import", id="2", name="November import")
WEBINAR_FORM = StatusSource("form", id="7", name="Webinar form")
PERSON = StatusSource("manual", name="Account manager")


@pytest.fixture
def stockholm(db):
    account = Account.load()
    account.update_day = 15
    account.yearly_plan = False
    account.time_zone = "Europe/Stockholm"
    account.save()
    return account


@pytest.fixture
def examples_month(stockholm, subscription, make_contacts):
    """EXAMPLES §1: P opens with 1,900; +300; 500 set non-marketing, 100 of them re-marked;
    50 others deleted; +4,000 from a form. Peak 6,150, 400 downgrades due at P's end."""
    opening = make_contacts(1_900)
    contacts_set_marketing(contacts=opening, source=OCTOBER_IMPORT, at=local(2026, 11, 1, 12))
    contacts_set_marketing(
        contacts=make_contacts(300), source=NOVEMBER_IMPORT, at=local(2026, 11, 16, 9)
    )
    ids = list(opening.order_by("pk").values_list("pk", flat=True))
    contacts_set_non_marketing(contacts=ids[:500], source=PERSON, at=local(2026, 11, 20, 9))
    contacts_set_marketing(contacts=ids[:100], source=PERSON, at=local(2026, 11, 25, 9))
    contacts_delete(contacts=ids[-50:], at=local(2026, 11, 28, 9))
    contacts_set_marketing(
        contacts=make_contacts(4_000), source=WEBINAR_FORM, at=local(2026, 12, 1, 9)
    )


def run(command, *args, at):
    out, err = io.StringIO(), io.StringIO()
    with time_machine.travel(at, tick=False):
        call_command(command, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def run_failing(command, *args, at):
    """Run a command expected to fail: (its error, what it printed before failing)."""
    out = io.StringIO()
    with time_machine.travel(at, tick=False), pytest.raises(CommandError) as error:
        call_command(command, *args, stdout=out, stderr=io.StringIO())
    return str(error.value), out.getvalue()


def number(start):
    return Invoice.objects.get(period__start=start).number


# --- close_billing_periods --------------------------------------------------------


def test_close_invoices_both_ended_periods(examples_month):
    out, err = run("close_billing_periods", at=local(2026, 12, 15, 0, 30))

    assert out.splitlines() == [
        "2026-10-15 → 2026-11-15  closed          peak     1,900  counter peak     1,900  "
        f"invoice {number(PREV_START)}  total 800.00 USD",
        "2026-11-15 → 2026-12-15  closed          peak     6,150  counter peak     6,150  "
        f"invoice {number(P_START)}  total 1,025.00 USD",
        "Closed 2 periods, invoiced 1,825.00 USD.",
    ]
    assert err == ""
    invoice = Invoice.objects.get(period__start=P_START)
    assert (invoice.total, invoice.status) == (102_500, "draft")
    assert list(invoice.lines.values_list("kind", "amount")) == [
        ("base", 80_000),
        ("overage", 22_500),
    ]
    assert PeriodUsage.objects.get(period_start=P_END).opening_count == 5_750


def test_a_dry_run_prints_the_invoices_and_writes_nothing(examples_month):
    ledger, counters = StatusChange.objects.count(), list(PeriodUsage.objects.values())

    out, _ = run("close_billing_periods", "--dry-run", at=local(2026, 12, 15, 0, 30))

    assert out.splitlines() == [
        "2026-10-15 → 2026-11-15  would close     peak     1,900  counter peak     1,900  "
        "total 800.00 USD",
        "2026-11-15 → 2026-12-15  would close     peak     6,150  counter peak     6,150  "
        "total 1,025.00 USD",
        "Dry run, nothing written: 2 periods would close, 0 would be held.",
    ]
    assert not BillingPeriod.objects.exists() and not Invoice.objects.exists()
    assert StatusChange.objects.count() == ledger
    assert list(PeriodUsage.objects.values()) == counters


def test_a_rerun_closes_nothing_and_says_so(examples_month):
    run("close_billing_periods", at=local(2026, 12, 15, 0, 30))
    ledger = StatusChange.objects.count()

    out, _ = run("close_billing_periods", at=local(2026, 12, 15, 2))

    assert out == (
        "Nothing to close: every period that ended by 2026-12-15 02:00 Europe/Stockholm "
        "is closed.\n"
    )
    assert Invoice.objects.count() == 2
    assert StatusChange.objects.count() == ledger


def test_as_of_is_read_in_the_accounts_time_zone(examples_month):
    # 23:59 on the 14th in Stockholm is 22:59 UTC: P (ends 23:00 UTC) has not ended yet.
    out, _ = run("close_billing_periods", "--as-of", "2026-12-14T23:59", at=local(2027, 1, 20))
    assert [line[:23] for line in out.splitlines()[:-1]] == ["2026-10-15 → 2026-11-15"]
    assert not BillingPeriod.objects.filter(start=P_START).exists()

    # A date is local midnight, the instant P ends: now P closes (and only P).
    out, _ = run("close_billing_periods", "--as-of", "2026-12-15", at=local(2027, 1, 20))
    assert [line[:23] for line in out.splitlines()[:-1]] == ["2026-11-15 → 2026-12-15"]

    # An explicit offset is kept: 23:30 UTC on the 14th is after P's end, before the next.
    out, _ = run(
        "close_billing_periods", "--as-of", "2026-12-14T23:30:00+00:00", at=local(2027, 1, 20)
    )
    assert out.startswith("Nothing to close: every period that ended by 2026-12-15 00:30 ")
    assert Invoice.objects.count() == 2


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_an_as_of_in_the_future_is_refused_and_nothing_is_closed(examples_month, dry_run):
    ledger = StatusChange.objects.count()

    error, out = run_failing(
        "close_billing_periods", "--as-of", "2027-06-01", *dry_run, at=local(2026, 12, 20)
    )

    assert error == (
        "--as-of 2027-06-01 00:00 Europe/Stockholm is in the future (it is 2026-12-20 00:00 "
        "Europe/Stockholm): only periods that have ended can be closed. Nothing was closed; "
        "give a past date, or leave --as-of out to close every period that has ended by now."
    )
    assert out == ""
    assert not BillingPeriod.objects.exists()
    assert StatusChange.objects.count() == ledger


def test_a_close_that_loses_the_race_prints_the_figures_the_period_was_closed_with(
    examples_month, monkeypatch
):
    # Another close finishes both periods after this one listed them, before it locks.
    ended_by = services.periods_ended_by

    def another_close_finishes_first(as_of):
        periods = ended_by(as_of)
        monkeypatch.setattr(services, "periods_ended_by", ended_by)
        billing_close_periods(at=local(2026, 12, 15, 0, 20))
        return periods

    monkeypatch.setattr(services, "periods_ended_by", another_close_finishes_first)

    out, _ = run("close_billing_periods", at=local(2026, 12, 15, 0, 30))

    assert out.splitlines() == [
        "2026-10-15 → 2026-11-15  already closed  peak     1,900  counter peak     1,900  "
        f"invoice {number(PREV_START)}  total 800.00 USD",
        "2026-11-15 → 2026-12-15  already closed  peak     6,150  counter peak     6,150  "
        f"invoice {number(P_START)}  total 1,025.00 USD",
        "Closed 0 periods; 2 already closed by another run.",
    ]
    assert Invoice.objects.count() == 2


@pytest.mark.parametrize("value", ["2026-13-01", "next tuesday", "15/12/2026", ""])
def test_a_bad_date_is_refused_before_anything_happens(examples_month, value):
    error, out = run_failing("close_billing_periods", "--as-of", value, at=local(2027, 1, 20))

    assert error == f"{value!r} is not a date (use YYYY-MM-DD)."
    assert out == ""
    assert not BillingPeriod.objects.exists()


def test_a_held_period_fails_the_command_and_says_which_and_why(examples_month):
    PeriodUsage.objects.filter(period_start=P_START).update(peak_count=6_151)

    error, out = run_failing("close_billing_periods", at=local(2026, 12, 15, 0, 30))

    assert error == (
        "The period 2026-11-15 → 2026-12-15 is held and was not invoiced: the ledger replay "
        "gives a peak of 6,150 but the live counters recorded 6,151. Find the cause (run "
        "verify_billing), repair it, then rerun close_billing_periods."
    )
    assert out.splitlines()[1:] == [
        "2026-11-15 → 2026-12-15  HELD            peak     6,150  counter peak     6,151",
        "Closed 1 period, invoiced 800.00 USD; 1 held.",
    ]
    assert BillingPeriod.objects.get(start=P_START).status == "discrepancy"
    assert not Invoice.objects.filter(period__start=P_START).exists()
    assert Invoice.objects.filter(period__start=PREV_START).exists()  # the other period closed


def test_a_dry_run_that_would_hold_also_fails(examples_month):
    PeriodUsage.objects.filter(period_start=P_START).update(peak_count=6_151)

    error, _ = run_failing("close_billing_periods", "--dry-run", at=local(2026, 12, 15, 0, 30))

    assert error.startswith("The period 2026-11-15 → 2026-12-15 would be held: ")
    assert not BillingPeriod.objects.exists()


def test_the_command_exits_non_zero_from_the_command_line(examples_month, capsys):
    PeriodUsage.objects.filter(period_start=P_START).update(peak_count=6_151)
    from django.core.management import ManagementUtility

    with (
        time_machine.travel(local(2026, 12, 15, 0, 30), tick=False),
        pytest.raises(SystemExit) as e,
    ):
        ManagementUtility(["manage.py", "close_billing_periods"]).execute()

    assert e.value.code == 1
    assert "CommandError: The period 2026-11-15 → 2026-12-15 is held" in capsys.readouterr().err


# --- billing_report -----------------------------------------------------------------


@pytest.fixture
def closed_month(examples_month):
    run("close_billing_periods", at=local(2026, 12, 15, 0, 30))


P_LINES = [
    {
        "kind": "base",
        "description": "Base price: 2,000 marketing contacts included",
        "amount": 80_000,
        "details": {"included": 2_000, "base_price": 80_000},
    },
    {
        "kind": "overage",
        "description": "Overage: 1 block of 5,000 contacts",
        "amount": 22_500,
        "details": {
            "included": 2_000,
            "peak": 6_150,
            "block_size": 5_000,
            "block_price": 22_500,
            "blocks": 1,
        },
    },
]


def test_report_json_of_the_last_closed_period(closed_month):
    out, _ = run("billing_report", "--format", "json", at=local(2026, 12, 20))

    assert json.loads(out) == {
        "period": {
            "start": "2026-11-14T23:00:00+00:00",
            "end": "2026-12-14T23:00:00+00:00",
            "start_local": "2026-11-15",
            "end_local": "2026-12-15",
            "time_zone": "Europe/Stockholm",
            "status": "closed",
        },
        "counts": {"opening": 1_900, "peak": 6_150, "closing": 6_150},
        "currency": "USD",
        "invoice": {
            "number": number(P_START),
            "status": "draft",
            "total": 102_500,
            "lines": P_LINES,
        },
        "estimate_total": None,
        "top_sources": [
            {"source_type": "form", "source_name": "Webinar form", "count": 4_000},
            {"source_type": "import", "source_name": "November import", "count": 300},
        ],
    }


def test_report_csv_of_a_chosen_period(closed_month):
    out, _ = run("billing_report", "--period", "2026-11", "--format", "csv", at=local(2027, 2, 1))

    rows = list(csv.reader(io.StringIO(out)))
    assert rows == [
        ["section", "name", "label", "value", "details"],
        ["period", "start", "", "2026-11-14T23:00:00+00:00", ""],
        ["period", "end", "", "2026-12-14T23:00:00+00:00", ""],
        ["period", "start_local", "", "2026-11-15", ""],
        ["period", "end_local", "", "2026-12-15", ""],
        ["period", "time_zone", "", "Europe/Stockholm", ""],
        ["period", "status", "", "closed", ""],
        ["period", "currency", "", "USD", ""],
        ["count", "opening", "", "1900", ""],
        ["count", "peak", "", "6150", ""],
        ["count", "closing", "", "6150", ""],
        ["invoice", "number", "draft", number(P_START), ""],
        [
            "line",
            "base",
            "Base price: 2,000 marketing contacts included",
            "80000",
            '{"base_price": 80000, "included": 2000}',
        ],
        [
            "line",
            "overage",
            "Overage: 1 block of 5,000 contacts",
            "22500",
            '{"block_price": 22500, "block_size": 5000, "blocks": 1, "included": 2000, '
            '"peak": 6150}',
        ],
        ["invoice", "total", "", "102500", ""],
        ["source", "form", "Webinar form", "4000", ""],
        ["source", "import", "November import", "300", ""],
    ]


def test_report_table(closed_month):
    out, _ = run("billing_report", "--period", "2026-11", at=local(2026, 12, 20))

    assert out.splitlines() == [
        "Billing period 2026-11-15 → 2026-12-15 (Europe/Stockholm)",
        "Status: closed",
        "  Opening count         1,900",
        "  Peak                  6,150",
        "  Closing count         6,150",
        "",
        f"Invoice {number(P_START)} (draft)",
        "  base     Base price: 2,000 marketing contacts included    800.00 USD  "
        "base_price=80000, included=2000",
        "  overage  Overage: 1 block of 5,000 contacts               225.00 USD  "
        "block_price=22500, block_size=5000, blocks=1, included=2000, peak=6150",
        "  total                                                   1,025.00 USD",
        "",
        "Top sources of new marketing contacts (up to 10)",
        "  form    Webinar form         4,000",
        "  import  November import        300",
    ]


def test_report_of_the_earlier_period(closed_month):
    out, _ = run(
        "billing_report", "--period", "2026-10", "--format", "json", at=local(2026, 12, 20)
    )

    data = json.loads(out)
    assert data["counts"] == {"opening": 0, "peak": 1_900, "closing": 1_900}
    assert data["invoice"]["total"] == 80_000
    assert data["top_sources"] == [
        {"source_type": "import", "source_name": "October import", "count": 1_900}
    ]


def test_report_of_the_current_period_before_any_close(examples_month):
    out, _ = run("billing_report", "--format", "json", at=local(2026, 12, 5))

    data = json.loads(out)
    assert data["period"]["start_local"] == "2026-11-15"
    assert data["period"]["status"] == "current"
    assert data["counts"] == {"opening": 1_900, "peak": 6_150, "closing": 6_150}
    assert (data["invoice"], data["estimate_total"]) == (None, 102_500)

    table, _ = run("billing_report", at=local(2026, 11, 26))
    assert "  Count now             2,200" in table.splitlines()
    assert "No invoice. Estimate at this peak: 1,025.00 USD" in table.splitlines()


def test_report_of_an_ended_period_not_yet_closed(examples_month):
    out, _ = run("billing_report", "--period", "2026-11", "--format", "json", at=local(2027, 1, 2))

    data = json.loads(out)
    assert (data["period"]["status"], data["counts"]["peak"], data["estimate_total"]) == (
        "ended",
        6_150,
        102_500,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--period", "2026-13"], "'2026-13' is not a month (use YYYY-MM, e.g. 2026-11)."),
        (["--period", "November"], "'November' is not a month (use YYYY-MM, e.g. 2026-11)."),
        (
            ["--period", "2027-02"],
            "The period starting 2027-02-15 has not begun yet; nothing to report.",
        ),
        (
            ["--format", "xml"],
            "Error: argument --format: invalid choice: 'xml' (choose from 'table', 'csv', 'json')",
        ),
    ],
)
def test_report_refuses_bad_input(closed_month, args, message):
    error, out = run_failing("billing_report", *args, at=local(2026, 12, 20))
    assert error == message
    assert out == ""


def test_top_sources_are_one_query_and_at_most_ten(
    stockholm, subscription, make_contacts, django_assert_num_queries
):
    for n in range(12):
        source = StatusSource("form", id=str(n), name=f"Form {n:02d}")
        contacts_set_marketing(contacts=make_contacts(n + 1), source=source, at=local(2026, 11, 20))
    outside = make_contacts(50)  # after the period: not counted
    contacts_set_marketing(contacts=outside, source=WEBINAR_FORM, at=local(2026, 12, 15, 0, 1))

    with django_assert_num_queries(1):
        sources = top_sources(start=P_START, end=P_END)

    assert [(s["source_name"], s["count"]) for s in sources] == [
        (f"Form {n:02d}", n + 1) for n in range(11, 1, -1)
    ]


# --- verify_billing -------------------------------------------------------------------


def test_verify_agrees_after_a_close(closed_month):
    out, _ = run("verify_billing", at=local(2026, 12, 20))

    assert out.splitlines() == [
        "OK        2026-12-15 → 2027-01-15 (current): peak 5,750, live 5,750",
        "OK        2026-11-15 → 2026-12-15: peak 6,150, closed",
        "OK        2026-10-15 → 2026-11-15: peak 1,900, closed",
        "All 3 periods agree with the ledger.",
    ]


def test_verify_agrees_on_an_empty_account(stockholm):
    out, _ = run("verify_billing", at=local(2026, 12, 20))
    assert out.splitlines() == [
        "OK        2026-12-15 → 2027-01-15 (current): peak 0, live 0",
        "The period agrees with the ledger.",
    ]


def test_verify_finds_a_tampered_peak(closed_month):
    PeriodUsage.objects.filter(period_start=P_START).update(peak_count=6_200)

    error, out = run_failing("verify_billing", "--periods", "1", at=local(2026, 12, 20))

    assert out.splitlines() == [
        "OK        2026-12-15 → 2027-01-15 (current): peak 5,750, live 5,750",
        "MISMATCH  2026-11-15 → 2026-12-15: peak: ledger 6,150, counters 6,200",
    ]
    assert error == (
        "1 of 2 periods disagree with the ledger: 2026-11-15 → 2026-12-15 (peak: ledger "
        "6,150, counters 6,200). Nothing was changed; a period that disagrees is held at its "
        "close until the counters are repaired."
    )
    assert PeriodUsage.objects.get(period_start=P_START).peak_count == 6_200


def test_verify_finds_a_tampered_live_count_and_billed_peak(closed_month):
    PeriodUsage.objects.filter(period_start=P_END).update(live_count=5_700)
    BillingPeriod.objects.filter(start=PREV_START).update(billed_peak_count=1_899)

    error, out = run_failing("verify_billing", at=local(2026, 12, 20))

    assert out.splitlines() == [
        "MISMATCH  2026-12-15 → 2027-01-15 (current): live count: counters 5,700, "
        "ledger 5,750, contacts 5,750",
        "OK        2026-11-15 → 2026-12-15: peak 6,150, closed",
        "MISMATCH  2026-10-15 → 2026-11-15: peak: ledger 1,900, billed 1,899",
    ]
    assert error.startswith("2 of 3 periods disagree with the ledger: ")


def test_verify_shows_a_held_period_and_agrees_once_repaired(examples_month):
    PeriodUsage.objects.filter(period_start=P_START).update(peak_count=6_151)
    run_failing("close_billing_periods", at=local(2026, 12, 15, 0, 30))  # P is held

    error, out = run_failing("verify_billing", "--periods", "1", at=local(2026, 12, 20))
    assert out.splitlines()[1] == (
        "MISMATCH  2026-11-15 → 2026-12-15: peak: ledger 6,150, counters 6,151"
    )

    PeriodUsage.objects.filter(period_start=P_START).update(peak_count=6_150)
    out, _ = run("verify_billing", "--periods", "1", at=local(2026, 12, 20))
    assert out.splitlines()[1] == (
        "OK        2026-11-15 → 2026-12-15: peak 6,150, held, not invoiced: rerun "
        "close_billing_periods once repaired"
    )


def test_verify_refuses_a_negative_number_of_periods(stockholm):
    error, _ = run_failing("verify_billing", "--periods", "-1", at=local(2026, 12, 20))
    assert error == "--periods must be 0 or more, not -1."
