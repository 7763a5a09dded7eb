"""The marketing status in Prometheus (crm/metrics.py serves them at /metrics).

* `marketable_status_changes_total{action}`: ledger rows written, by action (upgrade,
  downgrade_scheduled, downgrade_cancelled, deleted, rollover), counted after the change
  commits — a rolled-back change counts nothing, a replayed idempotency key nothing more.
* `marketable_marketing_contacts_live` and `marketable_marketing_contacts_peak`: the
  current period's live billable count and running peak, read from the counters
  (`usage_current`: one or two small queries, no COUNT over contacts) when scraped, and
  `marketable_marketing_contacts_pending_downgrades`.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

from contacts.status.models import LedgerAction

STATUS_CHANGES = Counter(
    "marketable_status_changes",
    "Marketing-status ledger rows written, by action.",
    ["action"],
)
_ACTIONS = frozenset(LedgerAction.values)


def status_changes_count(counts: Mapping[str, int]) -> None:
    """Add one change's ledger rows, by action (the other keys of `counts` are not actions)."""
    for action, rows in counts.items():
        if action in _ACTIONS and rows:
            STATUS_CHANGES.labels(action=action).inc(rows)


class UsageCollector:
    """The current period's counters, read at each scrape."""

    def collect(self):
        from contacts.status.selectors import usage_current

        usage = usage_current()
        for name, help_text, value in (
            ("live", "Billable (marketing) contacts now.", usage.live_count),
            ("peak", "The current billing period's peak of marketing contacts.", usage.peak_count),
            (
                "pending_downgrades",
                "Marketing contacts set non-marketing from the next update date.",
                usage.pending_downgrades,
            ),
        ):
            yield GaugeMetricFamily(f"marketable_marketing_contacts_{name}", help_text, value=value)
