"""The engagement events behind the demo contacts' "last engaged" dates.

Every demo contact with a `last_engaged_at` gets one to eight events (more the further
along its lifecycle stage), the newest exactly at `last_engaged_at` and the others spread
over the weeks before it (never before the contact was created, when it was created before
it engaged), so what the ingestion service keeps — `last_engaged_at` is the newest event —
holds for the demo too, and the criteria's `last_engaged` and `engagement_count`, the hygiene
wizard's "unengaged" and the lead scores all read the same story.

One `INSERT … SELECT` over the new contacts, on PostgreSQL and SQLite alike: a million
contacts' events are written by the database, not by Python, and no contact is loaded.
Events are append-only and keyed by an external id (`demo-<contact id>-<n>`), as the
ingestion keys them, so a second run never writes one twice (`ON CONFLICT DO NOTHING`).
"""

from __future__ import annotations

import datetime as dt

from django.db import connection

from contacts.engagement.models import EngagementEvent, EngagementType
from contacts.models import Contact, LifecycleStage

# How many events a contact of each stage has: base + (id mod spread).
EVENTS_BY_STAGE: dict[str, tuple[int, int]] = {
    LifecycleStage.SUBSCRIBER: (1, 2),
    LifecycleStage.LEAD: (1, 3),
    LifecycleStage.MQL: (3, 3),
    LifecycleStage.SQL: (4, 3),
    LifecycleStage.OPPORTUNITY: (5, 3),
    LifecycleStage.CUSTOMER: (2, 4),
    LifecycleStage.EVANGELIST: (4, 4),
    LifecycleStage.OTHER: (1, 1),
}
MAX_EVENTS = max(base + spread - 1 for base, spread in EVENTS_BY_STAGE.values())
# The mix of event types: a contact's n-th event takes the slot (7·id + 13·n) mod 20.
TYPE_SLOTS: list[str] = (
    [EngagementType.EMAIL_OPEN] * 6
    + [EngagementType.PAGE_VIEW] * 5
    + [EngagementType.EMAIL_CLICK] * 3
    + [EngagementType.FORM_SUBMISSION] * 2
    + [EngagementType.AD_CLICK] * 2
    + [EngagementType.CHAT]
    + [EngagementType.MEETING_BOOKED]
)
EXTERNAL_ID_PREFIX = "demo-"


def _cases() -> tuple[str, list, str, list]:
    """The SQL of a contact's event count and of its n-th event's type, with parameters."""
    count_sql = "CASE c.lifecycle_stage " + " ".join(
        "WHEN %s THEN %s + c.id %% %s" for _ in EVENTS_BY_STAGE
    )
    count_params: list = []
    for stage, (base, spread) in EVENTS_BY_STAGE.items():
        count_params += [str(stage), base, spread]
    count_sql += " ELSE 1 END"
    type_sql = f"CASE (c.id * 7 + s.n * 13) %% {len(TYPE_SLOTS)} " + " ".join(
        "WHEN %s THEN %s" for _ in TYPE_SLOTS
    )
    type_params: list = []
    for slot, kind in enumerate(TYPE_SLOTS):
        type_params += [slot, str(kind)]
    return count_sql, count_params, type_sql + " END", type_params


def demo_events_insert(*, after_id: int, now: dt.datetime) -> int:
    """Write the events of the demo contacts with ids above `after_id`; return how many."""
    count_sql, count_params, type_sql, type_params = _cases()
    # The n-th event (n ≥ 1) lies n·(2 + id mod 11) days and a few hours before the newest.
    offset = "(s.n * (2 + c.id %% 11) * 86400 + (c.id * 37 + s.n * 101) %% 43200)"
    if connection.vendor == "postgresql":
        shifted = f"c.last_engaged_at - {offset} * INTERVAL '1 second'"
    else:  # SQLite keeps instants as UTC text, which datetime() shifts and returns alike
        shifted = f"datetime(c.last_engaged_at, '-' || {offset} || ' seconds')"
    external_id = "%s || c.id || '-' || s.n"
    occurred = (
        f"CASE WHEN s.n = 0 THEN c.last_engaged_at "
        f"WHEN {shifted} < c.created_at AND c.created_at <= c.last_engaged_at THEN c.created_at "
        f"ELSE {shifted} END"
    )
    series = " UNION ALL ".join(f"SELECT {n} AS n" for n in range(MAX_EVENTS))
    sql = f"""
        INSERT INTO {EngagementEvent._meta.db_table}
            (contact_id, type, occurred_at, external_id, properties, created_at)
        SELECT c.id, {type_sql}, {occurred}, {external_id}, %s, %s
        FROM {Contact._meta.db_table} c CROSS JOIN ({series}) s
        WHERE c.id > %s AND c.last_engaged_at IS NOT NULL AND s.n < {count_sql}
        ON CONFLICT (external_id) DO NOTHING
    """
    params = [
        *type_params,
        EXTERNAL_ID_PREFIX,
        "{}",
        connection.ops.adapt_datetimefield_value(now),
        after_id,
        *count_params,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
