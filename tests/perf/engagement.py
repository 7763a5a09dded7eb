"""j. Engagement ingestion and scoring (`--only engagement`).

With N contacts (`--contacts`; fill: tests/perf/data.py) and scoring rules for every type
(plain ones, a windowed and a decaying one):

* 100,000 new events in 10 batches of 10,000, each as the API does it
  (`workflows.scoring.engagement_ingest_and_score`): one transaction — resolve the
  contacts, INSERT … ON CONFLICT DO NOTHING RETURNING, the new events' points by the
  scoring rules, and one UPDATE … FROM for last_engaged_at and the score together
  (contacts' `engagement_contacts_update`). The events' contacts are spread over the
  whole table; the bar: ≤ 5 s in all;
* the same 10,000 again (a retry: all duplicates);
* one batch of 10,000 new events through the API client (JSON in and out, permissions);
* the naive baseline on a sample (`--loop`): per event, a lookup of its external id, of its
  contact, an INSERT, an UPDATE of last_engaged_at and one of the score — extrapolated;
* the full recompute (`scores_recompute`) over the N contacts and the events stored;
* the 100,000 events again into a table of 100,000 contacts (the same bar).
"""

from __future__ import annotations

import datetime as dt
import random
import time

from django.db import connection, transaction
from django.utils import timezone

from contacts.engagement.models import (
    EngagementEvent,
    EngagementType,
)
from contacts.models import Contact
from tests.perf import data

EVENTS = 100_000
BATCH = 10_000
BAR_SECONDS = 5.0
SMALL_CONTACTS = 100_000
SEED = 20261126


def _events(prefix: str, count: int, contact_max: int, now: dt.datetime, rng) -> list[dict]:
    types = EngagementType.values
    return [
        {
            "contact_id": rng.randint(1, contact_max),
            "type": types[n % len(types)],
            "occurred_at": (now - dt.timedelta(seconds=rng.randint(0, 60 * 86_400))).isoformat(),
            "external_id": f"{prefix}-{n}",
            "properties": {"campaign": f"c{n % 17}"},
        }
        for n in range(count)
    ]


def _rules() -> None:
    from workflows.models import ScoringRule

    ScoringRule.objects.all().delete()
    points = {
        "email_open": 1,
        "email_click": 3,
        "form_submission": 10,
        "page_view": 1,
        "ad_click": 4,
        "chat": 6,
        "meeting_booked": 20,
    }
    for event_type, value in points.items():
        ScoringRule.objects.create(event_type=event_type, points=value)
    ScoringRule.objects.create(event_type="page_view", points=2, window_days=30)
    ScoringRule.objects.create(event_type="email_click", points=5, half_life_days=14)


def _ingest_as_the_api_does(items: list[dict], now: dt.datetime) -> tuple[int, int]:
    from workflows.scoring import engagement_ingest_and_score

    batch, scored = engagement_ingest_and_score(items=items, now=now)
    return batch.created, scored


def _naive(items: list[dict]) -> None:
    """What one would write first: one event at a time, five statements each."""
    from django.db.models import F, Q

    from contacts.engagement.services import _engagement_datetime
    from workflows.scoring import scores_event_points

    for item in items:
        with transaction.atomic():
            if EngagementEvent.objects.filter(external_id=item["external_id"]).exists():
                continue
            contact = Contact.objects.only("id").get(pk=item["contact_id"])
            occurred_at, _ = _engagement_datetime(item["occurred_at"])
            EngagementEvent.objects.create(
                contact=contact,
                type=item["type"],
                occurred_at=occurred_at,
                external_id=item["external_id"],
                properties=item["properties"],
            )
            Contact.objects.filter(pk=contact.pk).filter(
                Q(last_engaged_at__isnull=True) | Q(last_engaged_at__lt=occurred_at)
            ).update(last_engaged_at=occurred_at)
            from contacts.hooks import NewEngagementEvent

            points = scores_event_points(
                events=[NewEngagementEvent(contact.pk, item["type"], occurred_at)],
                now=timezone.now(),
            )
            if points:
                Contact.objects.filter(pk=contact.pk).update(
                    lead_score=F("lead_score") + points[contact.pk]
                )


def _api_batch(items: list[dict]) -> tuple[float, int, int]:
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    user, _ = get_user_model().objects.get_or_create(
        username="bench-engagement", defaults={"is_staff": True, "is_superuser": True}
    )
    client = APIClient(SERVER_NAME="127.0.0.1")  # an allowed host in local settings
    client.force_authenticate(user)
    started = time.perf_counter()
    response = client.post("/api/engagement-events/", {"events": items}, format="json")
    seconds = time.perf_counter() - started
    assert response.status_code == 200, response.content[:500]
    return seconds, response.json()["created"], len(response.content)


def run(options, say) -> dict:
    from workflows.scoring import scores_recompute

    table = EngagementEvent._meta.db_table
    contacts = options.contacts
    say(f"j: setting up {contacts:,} contacts")
    # Scores as scoring keeps them (every contact without events: 0), not the fill's values,
    # so the final recompute measures the nightly steady state and checks the increments.
    # Written so by the fill: resetting them afterwards rewrote every row, which left the
    # table and its indexes at twice their size (380 and 416 MB against 211 and 221 MB)
    # and the ingestion 15–40 % slower than into the table as a restore leaves it.
    data.fill(contacts, scores=False)
    data.execute(f"TRUNCATE {table} RESTART IDENTITY")
    _rules()
    data.execute(f"VACUUM ANALYZE {table}")
    data.checkpoint()
    rng = random.Random(SEED)
    now = timezone.now()
    events = _events("bench", EVENTS, contacts, now, rng)
    result: dict = {"contacts": contacts, "events": EVENTS, "batch": BATCH, "batches": []}

    say(f"j: {EVENTS:,} events in batches of {BATCH:,} (service + scoring, as the API)")
    started = time.perf_counter()
    created = scored = 0
    for start in range(0, EVENTS, BATCH):
        t0 = time.perf_counter()
        c, s = _ingest_as_the_api_does(events[start : start + BATCH], now)
        result["batches"].append(time.perf_counter() - t0)
        created, scored = created + c, scored + s
    result["seconds"] = time.perf_counter() - started
    result["created"], result["scored"] = created, scored
    say(f"     {result['seconds']:.2f} s ({created:,} created, {scored:,} scores moved)")

    say("j: a retry of one batch (all duplicates)")
    t0 = time.perf_counter()
    c, _ = _ingest_as_the_api_does(events[:BATCH], now)
    result["retry_seconds"], result["retry_created"] = time.perf_counter() - t0, c

    say(f"j: one batch of {BATCH:,} through the API client")
    api_items = _events("api", BATCH, contacts, now, rng)
    seconds, api_created, size = _api_batch(api_items)
    result["api"] = {"seconds": seconds, "created": api_created, "response_bytes": size}

    say(f"j: naive per-event loop, {options.loop:,} events")
    sample = _events("naive", options.loop, contacts, now, rng)
    t0 = time.perf_counter()
    _naive(sample)
    per_event = (time.perf_counter() - t0) / len(sample)
    result["naive"] = {"sample": len(sample), "per_event": per_event}

    say("j: full recompute")
    data.execute(f"VACUUM ANALYZE {table}", f"VACUUM ANALYZE {Contact._meta.db_table}")
    recompute = scores_recompute(now=now)
    result["recompute"] = recompute.as_dict()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        result["events_stored"] = cursor.fetchone()[0]
    say(f"     {recompute.seconds:.2f} s, {recompute.changed:,} changed")

    # The same ingestion into a smaller table: what the bar costs where the contacts the
    # events touch fit in PostgreSQL's buffers (128 MB here), and what table size adds.
    small = min(SMALL_CONTACTS, contacts)
    say(f"j: {EVENTS:,} events again, with {small:,} contacts")
    data.fill(small)
    data.execute(f"TRUNCATE {table} RESTART IDENTITY")
    data.vacuum()
    data.execute(f"VACUUM ANALYZE {table}")
    data.checkpoint()
    events = _events("small", EVENTS, small, now, rng)
    batches = []
    started = time.perf_counter()
    for start in range(0, EVENTS, BATCH):
        t0 = time.perf_counter()
        _ingest_as_the_api_does(events[start : start + BATCH], now)
        batches.append(time.perf_counter() - t0)
    result["small"] = {
        "contacts": small,
        "seconds": time.perf_counter() - started,
        "batches": batches,
    }
    say(f"     {result['small']['seconds']:.2f} s")
    return result
