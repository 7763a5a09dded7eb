"""`manage.py billing_report [--period YYYY-MM] [--format table|csv|json]`: one period's bill.

The counts come from the ledger replay (the source of truth), not from the counters, so
the report says what the ledger says even when a period is held. Money stays in
integer minor units in csv and json; only the table formats it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import dataclass, field

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count
from django.utils import timezone

from billing.management import local_day, parse_month, period_label
from billing.models import BillingPeriod, BillingPeriodStatus, Invoice, Subscription
from billing.money import format_money
from billing.pricing import price_for_peak
from contacts.status.models import (
    LedgerAction,
    StatusChange,
)
from contacts.status.selectors import ledger_replay
from crm.calendar import BillingCalendar

TOP_SOURCES = 10
TICK = dt.timedelta(microseconds=1)


def top_sources(*, start: dt.datetime, end: dt.datetime, limit: int = TOP_SOURCES) -> list[dict]:
    """Where the period's new marketing contacts came from: one GROUP BY over the ledger.

    Only upgrades count; a re-mark cancelling a pending downgrade makes nobody new.
    """
    # statuschange_effective_idx
    rows = (
        StatusChange.objects.filter(
            action=LedgerAction.UPGRADE, effective_at__gte=start, effective_at__lt=end
        )
        .values("source_type", "source_name")
        .annotate(count=Count("id"))
        .order_by("-count", "source_type", "source_name")[:limit]
    )
    return list(rows)


@dataclass
class Report:
    start: dt.datetime
    end: dt.datetime
    state: str  # closed | held | ended | current
    opening_count: int
    peak_count: int
    closing_count: int
    currency: str
    invoice: Invoice | None = None
    estimate_total: int | None = None
    sources: list[dict] = field(default_factory=list)


class Command(BaseCommand):
    help = (
        "Report one billing period: opening, peak and closing counts from the ledger, its "
        "invoice lines and where its new marketing contacts came from."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--period",
            metavar="YYYY-MM",
            help="The period that starts in this month (default: the last closed period, "
            "or the current one when none is closed).",
        )
        parser.add_argument("--format", choices=["table", "csv", "json"], default="table")

    def handle(self, *args, period: str | None, format: str, **options):
        calendar = BillingCalendar.for_account()
        now = timezone.now()
        start, end = self._bounds(period, calendar, now)
        report = self._build(start, end, now)
        render = {"table": self._table, "csv": self._csv, "json": self._json}[format]
        render(report, calendar)

    def _bounds(self, period: str | None, calendar: BillingCalendar, now: dt.datetime):
        if period:
            start = calendar.start_in_month(*parse_month(period))
            if start > now:
                raise CommandError(
                    f"The period starting {local_day(start, calendar)} has not begun yet; "
                    "nothing to report."
                )
            return start, calendar.following(start)
        last = (
            BillingPeriod.objects.filter(status=BillingPeriodStatus.CLOSED)
            .order_by("-start")
            .first()
        )
        if last is not None:
            return last.start, last.end
        return calendar.period_bounds(now)

    def _build(self, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> Report:
        current = start <= now < end
        # The current period is replayed up to now: its closing count is the count now.
        replay = ledger_replay(start=start, end=now + TICK if current else end)
        closed = BillingPeriod.objects.filter(start=start).first()
        invoice = (
            Invoice.objects.filter(period__start=start).prefetch_related("lines").first()
            if closed is not None
            else None
        )
        if current:
            state = "current"
        elif closed is None:
            state = "ended"
        else:
            state = "held" if closed.status == BillingPeriodStatus.DISCREPANCY else "closed"
        subscription = Subscription.load()
        report = Report(
            start=start,
            end=end,
            state=state,
            opening_count=replay.opening_count,
            peak_count=replay.peak_count,
            closing_count=replay.closing_count,
            currency=invoice.currency if invoice else subscription.currency,
            invoice=invoice,
            sources=top_sources(start=start, end=end),
        )
        if invoice is None:
            report.estimate_total = price_for_peak(
                peak=replay.peak_count, subscription=subscription
            ).total
        return report

    # How each format renders the report.

    STATE_LABELS = {
        "closed": "closed",
        "held": "held: the ledger and the counters disagree (see verify_billing)",
        "ended": "ended, not closed yet",
        "current": "current (counts so far)",
    }

    def _table(self, report: Report, calendar: BillingCalendar) -> None:
        out = self.stdout
        money = lambda amount: format_money(amount, report.currency)  # noqa: E731
        out.write(
            f"Billing period {period_label(report.start, report.end, calendar)} "
            f"({calendar.time_zone})"
        )
        out.write(f"Status: {self.STATE_LABELS[report.state]}")
        closing = "Count now" if report.state == "current" else "Closing count"
        rows = [
            ("Opening count", f"{report.opening_count:,}"),
            ("Peak", f"{report.peak_count:,}"),
            (closing, f"{report.closing_count:,}"),
        ]
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            out.write(f"  {label:<{width}}  {value:>12}")
        out.write("")
        if report.invoice is not None:
            invoice = report.invoice
            out.write(f"Invoice {invoice.number} ({invoice.status})")
            lines = list(invoice.lines.all())
            description_width = max(len(line.description) for line in lines)
            kind_width = max(len(line.kind) for line in lines)
            amounts = [money(line.amount) for line in lines] + [money(invoice.total)]
            amount_width = max(len(a) for a in amounts)
            for line, amount in zip(lines, amounts, strict=False):
                details = ", ".join(f"{k}={v}" for k, v in sorted(line.details.items()))
                out.write(
                    f"  {line.kind:<{kind_width}}  {line.description:<{description_width}}  "
                    f"{amount:>{amount_width}}  {details}"
                )
            out.write(
                f"  {'total':<{kind_width}}  {'':<{description_width}}  "
                f"{money(invoice.total):>{amount_width}}"
            )
        else:
            out.write(f"No invoice. Estimate at this peak: {money(report.estimate_total)}")
        out.write("")
        if not report.sources:
            out.write("No new marketing contacts in this period.")
            return
        out.write(f"Top sources of new marketing contacts (up to {TOP_SOURCES})")
        type_width = max(len(s["source_type"]) for s in report.sources)
        name_width = max(len(s["source_name"] or "—") for s in report.sources)
        for source in report.sources:
            out.write(
                f"  {source['source_type']:<{type_width}}  {source['source_name'] or '—':<{name_width}}"
                f"  {source['count']:>9,}"
            )

    def _data(self, report: Report, calendar: BillingCalendar) -> dict:
        data = {
            "period": {
                "start": report.start.isoformat(),
                "end": report.end.isoformat(),
                "start_local": local_day(report.start, calendar),
                "end_local": local_day(report.end, calendar),
                "time_zone": calendar.time_zone,
                "status": report.state,
            },
            "counts": {
                "opening": report.opening_count,
                "peak": report.peak_count,
                "closing": report.closing_count,
            },
            "currency": report.currency,
            "invoice": None,
            "estimate_total": report.estimate_total,
            "top_sources": [
                {
                    "source_type": s["source_type"],
                    "source_name": s["source_name"],
                    "count": s["count"],
                }
                for s in report.sources
            ],
        }
        if report.invoice is not None:
            invoice = report.invoice
            data["invoice"] = {
                "number": invoice.number,
                "status": invoice.status,
                "total": invoice.total,
                "lines": [
                    {
                        "kind": line.kind,
                        "description": line.description,
                        "amount": line.amount,
                        "details": line.details,
                    }
                    for line in invoice.lines.all()
                ],
            }
        return data

    def _json(self, report: Report, calendar: BillingCalendar) -> None:
        self.stdout.write(json.dumps(self._data(report, calendar), indent=2, ensure_ascii=False))

    def _csv(self, report: Report, calendar: BillingCalendar) -> None:
        """One flat table — section, name, label, value, details — so a spreadsheet reads it."""
        data = self._data(report, calendar)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["section", "name", "label", "value", "details"])
        for key in ("start", "end", "start_local", "end_local", "time_zone", "status"):
            writer.writerow(["period", key, "", data["period"][key], ""])
        writer.writerow(["period", "currency", "", data["currency"], ""])
        for key, value in data["counts"].items():
            writer.writerow(["count", key, "", value, ""])
        if data["invoice"] is not None:
            invoice = data["invoice"]
            writer.writerow(["invoice", "number", invoice["status"], invoice["number"], ""])
            for line in invoice["lines"]:
                writer.writerow(
                    [
                        "line",
                        line["kind"],
                        line["description"],
                        line["amount"],
                        json.dumps(line["details"], sort_keys=True),
                    ]
                )
            writer.writerow(["invoice", "total", "", invoice["total"], ""])
        else:
            writer.writerow(["estimate", "total", "", data["estimate_total"], ""])
        for source in data["top_sources"]:
            writer.writerow(
                ["source", source["source_type"], source["source_name"], source["count"], ""]
            )
        self.stdout.write(buffer.getvalue(), ending="")
