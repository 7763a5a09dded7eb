"""Billing writes: the close of a period, invoices, finalisation and alerts (DESIGN §1.4).

The close is one service, reached from the `close_billing_periods` command, the
daily beat task and the admin action. When some period has ended unclosed it:

1. waits for the status changes under way to commit (it takes and releases the usage
   lock, once): every change that can still come is stamped after the periods' end, so
   their ledger rows and counters no longer move;

and then, for each of those periods,
2. takes the billing lock and returns at once if the period is already closed — so
   running it twice, or twice at once, closes it once;
3. recomputes the peak by replaying the ledger and compares it with the live
   counters' peak; when they disagree it holds the period, records the
   discrepancy and alerts, and writes no invoice;
4. writes the invoice: base, overage and adjustment lines, in minor units;
5. once that is committed, applies the downgrades due at the boundary (contacts'
   rollover, which also opens the next period's counters).

Steps 2–4 share one transaction, so a crash between any two leaves nothing
half-done: the rerun starts again. The bill does not depend on step 5 (the
ledger counted each downgrade at its date when it was scheduled), and the rollover
holds the usage lock a chunk at a time: status changes go on during the close.
A rollover stopped half-way is finished by the next close or the hourly
`apply_due_downgrades`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from billing.alerts import billing_fire_alerts
from billing.models import (
    AlertKind,
    BillingPeriod,
    BillingPeriodStatus,
    Invoice,
    InvoiceLine,
    InvoiceLineKind,
    InvoiceStatus,
    Subscription,
)
from billing.pricing import Price, overage_blocks, price_for_peak
from contacts.status.models import (
    PeriodUsage,
)
from contacts.status.selectors import (
    ledger_replay,
    usage_current,
)
from contacts.status.services import contacts_rollover
from crm.calendar import BillingCalendar
from crm.locks import lock_billing, lock_usage
from crm.text import counted

logger = logging.getLogger(__name__)

# Earlier periods re-checked for late changes at each close (an adjustment line each).
ADJUSTMENT_LOOKBACK_PERIODS = 12


@dataclass
class CloseOutcome:
    period_start: dt.datetime
    period_end: dt.datetime
    status: str  # closed | already_closed | held | would_close
    peak_count: int = 0
    counter_peak_count: int = 0
    invoice_number: str = ""
    total: int = 0
    currency: str = ""
    rollover_applied: int = 0

    def as_dict(self) -> dict:
        return {
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "status": self.status,
            "peak_count": self.peak_count,
            "counter_peak_count": self.counter_peak_count,
            "invoice_number": self.invoice_number,
            "total": self.total,
            "currency": self.currency,
            "rollover_applied": self.rollover_applied,
        }


def periods_ended_by(as_of: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
    """Every period from the first one with activity whose end is at or before `as_of`."""
    first = (
        PeriodUsage.objects.order_by("period_start").values_list("period_start", flat=True).first()
    )
    if first is None:
        return []
    calendar = BillingCalendar.for_account()
    periods = []
    start = first
    while True:
        end = calendar.following(start)
        if end > as_of:
            return periods
        periods.append((start, end))
        start = end


def billing_close_periods(
    *, as_of: dt.datetime | None = None, dry_run: bool = False, at: dt.datetime | None = None
) -> list[CloseOutcome]:
    """Close every period that has ended by `as_of` (default: now), then finalise due drafts.

    `at` stands for the present in tests and time-travel runs.
    """
    now = at or timezone.now()
    as_of = min(as_of or now, now)
    closed = set(
        BillingPeriod.objects.filter(status=BillingPeriodStatus.CLOSED).values_list(
            "start", flat=True
        )
    )
    outcomes = []
    to_close = [(start, end) for start, end in periods_ended_by(as_of) if start not in closed]
    if to_close:
        _settle_changes_under_way()  # once: every change after it is stamped after `as_of`
    for start, end in to_close:
        outcome = _close_period(start=start, end=end, now=now, dry_run=dry_run)
        if not dry_run:
            outcome.rollover_applied = contacts_rollover(as_of=end, at=max(now, end)).applied
        outcomes.append(outcome)
    if not dry_run:
        billing_finalise_invoices(at=now)
    return outcomes


def _counter_peak(start: dt.datetime) -> int:
    return usage_current(at=start).peak_count


def _settle_changes_under_way() -> None:
    """Wait for the status changes that hold the usage lock to commit, and hold it no longer.

    A change takes its instant under that lock, from the clock, and the periods closed
    have ended by the clock: every change that takes the lock after this one is stamped
    after their end, whichever of them is closed first. So the closed periods' ledger rows
    and counter rows are final, and the close reads them without the lock.
    """
    with transaction.atomic():
        lock_usage()


def _close_period(
    *, start: dt.datetime, end: dt.datetime, now: dt.datetime, dry_run: bool
) -> CloseOutcome:
    with transaction.atomic():
        subscription = lock_billing()
        existing = BillingPeriod.objects.filter(start=start).select_related("invoice").first()
        if existing is not None and existing.status == BillingPeriodStatus.CLOSED:
            return _already_closed(existing)
        replay = ledger_replay(start=start, end=end)
        counter_peak = _counter_peak(start)
        outcome = CloseOutcome(
            start,
            end,
            "would_close",
            peak_count=replay.peak_count,
            counter_peak_count=counter_peak,
            currency=subscription.currency,
        )
        if dry_run:
            outcome.total = price_for_peak(peak=replay.peak_count, subscription=subscription).total
            outcome.status = "would_close" if replay.peak_count == counter_peak else "held"
            return outcome
        fields = {
            "end": end,
            "opening_count": replay.opening_count,
            "closing_count": replay.closing_count,
            "peak_count": replay.peak_count,
            "counter_peak_count": counter_peak,
            "closed_at": now,
        }
        if replay.peak_count != counter_peak:
            _store_period(
                existing,
                start=start,
                fields=fields
                | {
                    "status": BillingPeriodStatus.DISCREPANCY,
                    "discrepancy": {"ledger_peak": replay.peak_count, "counter_peak": counter_peak},
                },
            )
            billing_fire_alerts(
                subscription,
                start,
                [(AlertKind.DISCREPANCY, 0)],
                peak=replay.peak_count,
                now=now,
                detail=f"ledger replay peak {replay.peak_count} ≠ counter peak {counter_peak}",
            )
            outcome.status = "held"
            return outcome
        period = _store_period(
            existing,
            start=start,
            fields=fields
            | {
                "status": BillingPeriodStatus.CLOSED,
                "discrepancy": {},
                "billed_peak_count": replay.peak_count,
            },
        )
        invoice = _write_invoice(period=period, subscription=subscription, now=now)
        outcome.status = "closed"
        outcome.invoice_number = invoice.number
        outcome.total = invoice.total
        return outcome


def _already_closed(period: BillingPeriod) -> CloseOutcome:
    """A period a concurrent close finished first: the figures it was closed with."""
    invoice = period.invoice  # written in the same transaction as the closed status
    return CloseOutcome(
        period.start,
        period.end,
        "already_closed",
        peak_count=period.peak_count,
        counter_peak_count=period.counter_peak_count,
        invoice_number=invoice.number,
        total=invoice.total,
        currency=invoice.currency,
    )


def _store_period(
    existing: BillingPeriod | None, *, start: dt.datetime, fields: dict
) -> BillingPeriod:
    """Write the period's row (new, or a held one closed at last). The close holds the
    billing lock, so it is the row's only writer: no get-or-create race to survive."""
    period = existing or BillingPeriod(start=start)
    for name, value in fields.items():
        setattr(period, name, value)
    period.save()
    return period


def _price_lines(price: Price) -> list[dict]:
    return [
        {
            "kind": InvoiceLineKind.BASE,
            "description": f"Base price: {price.included:,} marketing contacts included",
            "amount": price.base_price,
            "details": {"included": price.included, "base_price": price.base_price},
        },
        {
            "kind": InvoiceLineKind.OVERAGE,
            "description": f"Overage: {counted(price.blocks, 'block')} of {price.block_size:,} contacts",
            "amount": price.overage,
            "details": {
                "included": price.included,
                "peak": price.peak,
                "block_size": price.block_size,
                "block_price": price.block_price,
                "blocks": price.blocks,
            },
        },
    ]


def _write_invoice(
    *, period: BillingPeriod, subscription: Subscription, now: dt.datetime
) -> Invoice:
    price = price_for_peak(peak=period.peak_count, subscription=subscription)
    lines = _price_lines(price) + _adjustment_lines(before=period.start)
    invoice = Invoice.objects.create(
        period=period,
        # Numbered by the period's local start date: the update date the customer knows.
        number=f"INV-{period.start.astimezone(BillingCalendar.for_account().tz):%Y%m%d}",
        currency=subscription.currency,
        total=sum(line["amount"] for line in lines),
        created_at=now,
        finalise_after=now + dt.timedelta(hours=settings.BILLING_GRACE_HOURS),
    )
    InvoiceLine.objects.bulk_create(InvoiceLine(invoice=invoice, **line) for line in lines)
    return invoice


def _adjustment_lines(*, before: dt.datetime) -> list[dict]:
    """Late changes to finalised periods, as lines of the next invoice.

    A finalised invoice never changes. If the ledger of its period now replays to
    another peak (a change recorded late), the difference is billed — or credited
    — here, priced with the inputs that invoice used.
    """
    lines = []
    periods = (
        BillingPeriod.objects.filter(
            start__lt=before, status=BillingPeriodStatus.CLOSED, invoice__status=InvoiceStatus.FINAL
        )
        .select_related("invoice")
        .order_by("-start")[:ADJUSTMENT_LOOKBACK_PERIODS]
    )
    for period in periods:
        replay = ledger_replay(start=period.start, end=period.end)
        if replay.peak_count == period.billed_peak_count:
            continue
        overage = period.invoice.lines.get(kind=InvoiceLineKind.OVERAGE).details
        snapshot = Subscription(
            included_contacts=overage["included"],
            block_size=overage["block_size"],
            block_price=overage["block_price"],
            base_price=0,
        )
        old = price_for_peak(peak=period.billed_peak_count, subscription=snapshot)
        new = price_for_peak(peak=replay.peak_count, subscription=snapshot)
        if new.overage != old.overage:
            lines.append(
                {
                    "kind": InvoiceLineKind.ADJUSTMENT,
                    "description": (
                        f"Adjustment for {period.start:%Y-%m-%d}: peak {period.billed_peak_count:,} → "
                        f"{replay.peak_count:,}"
                    ),
                    "amount": new.overage - old.overage,
                    "details": {
                        "period_start": period.start.isoformat(),
                        "invoice": period.invoice.number,
                        "billed_peak": period.billed_peak_count,
                        "peak": replay.peak_count,
                        "included": snapshot.included_contacts,
                        "block_size": snapshot.block_size,
                        "block_price": snapshot.block_price,
                        "blocks_before": old.blocks,
                        "blocks_after": new.blocks,
                    },
                }
            )
        BillingPeriod.objects.filter(pk=period.pk).update(billed_peak_count=replay.peak_count)
    return lines


def billing_finalise_invoices(*, at: dt.datetime | None = None) -> int:
    """Finalise the drafts whose grace window has ended; a draft is re-priced first if its
    period's ledger changed meanwhile. Returns how many became final."""
    now = at or timezone.now()
    count = 0
    with transaction.atomic():
        subscription = lock_billing()
        drafts = Invoice.objects.select_related("period").filter(
            status=InvoiceStatus.DRAFT, finalise_after__lte=now
        )
        for invoice in drafts:
            period = invoice.period
            replay = ledger_replay(start=period.start, end=period.end)
            if replay.peak_count != period.peak_count:
                _reprice_draft(invoice, replay.peak_count, subscription)
            invoice.status = InvoiceStatus.FINAL
            invoice.finalised_at = now
            invoice.save(update_fields=["status", "finalised_at", "total"])
            count += 1
    return count


def _reprice_draft(invoice: Invoice, peak: int, subscription: Subscription) -> None:
    overage_line = invoice.lines.get(kind=InvoiceLineKind.OVERAGE)
    snapshot = overage_line.details
    blocks = overage_blocks(
        peak=peak, included=snapshot["included"], block_size=snapshot["block_size"]
    )
    overage_line.amount = blocks * snapshot["block_price"]
    overage_line.details = snapshot | {"peak": peak, "blocks": blocks}
    overage_line.description = (
        f"Overage: {counted(blocks, 'block')} of {snapshot['block_size']:,} contacts"
    )
    overage_line.save()
    invoice.total = sum(invoice.lines.values_list("amount", flat=True))
    BillingPeriod.objects.filter(pk=invoice.period_id).update(
        peak_count=peak, billed_peak_count=peak
    )
