"""A plain-Python model of the ledger replay, to check the counters against."""

from contacts.status.models import StatusChange


def ledger_events():
    return list(
        StatusChange.objects.order_by("effective_at", "id").values_list("effective_at", "delta")
    )


def count_at(instant, events=None) -> int:
    events = ledger_events() if events is None else events
    return sum(delta for effective_at, delta in events if effective_at <= instant)


def peak_between(start, end, events=None) -> int:
    """Max of the billable count over every instant of [start, end), including start."""
    events = ledger_events() if events is None else events
    instants = {start} | {e for e, _ in events if start < e < end}
    return max(count_at(instant, events) for instant in instants)
