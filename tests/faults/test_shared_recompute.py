"""The lead-score recompute shared by two real workers on Redis: the task queued as the beat
queues it splits into chunk tasks that both workers take, a chord sums them, and the scores
are exactly the one-process recompute's; a worker killed with -9 in the middle leaves a
recompute that a rerun finishes to the same scores.

The chunks are made small and slow by the worker's test knobs (FAULTS_SCORE_CHUNK,
FAULTS_STEP_PAUSE: tests/faults/worker_app.py), so both workers have chunks to take and a
worker can be killed with chunks left.
"""

import datetime as dt

import pytest
from celery.backends.redis import RedisBackend
from celery.result import AsyncResult

from contacts.engagement.services import engagement_events_ingest
from contacts.models import Contact, Source, SourceKind
from crm.celery import app
from tests.faults.conftest import DEADLINE, REDIS_URL, wait_for
from workflows.models import ScoringRule
from workflows.scoring import scores_recompute
from workflows.tasks import recompute_scores

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
CONTACTS = 400
CHUNKS = 8  # the id span is cut into about this many chunks
TYPES = ["email_open", "email_click", "page_view", "form_submission", "chat"]


def stale_contacts_with_events() -> list[int]:
    """CONTACTS contacts with stale scores, three in four with a few events of every kind and
    age; plain, windowed and decaying rules. Returns the contacts' ids."""
    source, _ = Source.objects.get_or_create(name="Worker tests", kind=SourceKind.MANUAL)
    Contact.objects.bulk_create(
        Contact(email=f"s{i:05d}@example.com", source=source, lead_score=7) for i in range(CONTACTS)
    )
    ids = list(Contact.objects.order_by("pk").values_list("pk", flat=True))
    for event_type, points, extra in [
        ("email_open", 1, {}),
        ("email_click", 3, {}),
        ("email_click", 5, {"half_life_days": 14}),
        ("page_view", 2, {"window_days": 30}),
        ("form_submission", -4, {}),
    ]:
        ScoringRule.objects.create(event_type=event_type, points=points, **extra)
    items = [
        {
            "contact_id": pk,
            "type": TYPES[(i + n) % 5],
            "occurred_at": (NOW - dt.timedelta(days=7 * n + i % 9)).isoformat(),
            "external_id": f"w{pk}-{n}",
        }
        for i, pk in enumerate(ids)
        if i % 4 != 3
        for n in range(i % 5 + 1)
    ]
    engagement_events_ingest(items=items, now=NOW, notify=False)
    return ids


def one_process_scores(ids: list[int]) -> list[int]:
    """The scores `scores_recompute` gives in this process; the stale ones are put back."""
    scores_recompute(now=NOW)
    expected = scores(ids)
    Contact.objects.update(lead_score=7)
    return expected


def scores(ids: list[int]) -> list[int]:
    return list(
        Contact.objects.filter(pk__in=ids).order_by("pk").values_list("lead_score", flat=True)
    )


def total(queued) -> dict:
    """The chord's result, read from the workers' Redis (this process has no result backend)."""
    backend = RedisBackend(app=app, url=REDIS_URL)
    return AsyncResult(queued.id, app=app, backend=backend).get(timeout=DEADLINE)


def chunks_taken(worker) -> int:
    return worker.received("workflows.recompute_scores_chunk")


def chunk_of(ids: list[int]) -> tuple[int, int]:
    """A chunk size that cuts the contacts' id span into about CHUNKS chunks, and the number
    of chunks the recompute makes of it (from the first contact's id to the last)."""
    first, last = min(ids), max(ids)
    chunk = (last - first) // CHUNKS + 1
    return chunk, len(range(first, last + 1, chunk))


def test_two_workers_share_the_recompute_and_give_the_one_process_scores(workers, account):
    ids = stale_contacts_with_events()
    expected = one_process_scores(ids)
    chunk, chunks = chunk_of(ids)
    knobs = {"FAULTS_SCORE_CHUNK": chunk, "FAULTS_STEP_PAUSE": 0.2}
    first, second = workers(**knobs), workers(**knobs)

    queued = recompute_scores.delay(now=NOW.isoformat())  # as the beat sends it, plus `now`

    result = total(queued)
    assert (result["rules"], result["chunks"], result["dry_run"]) == (5, chunks, False)
    assert result["changed"] == sum(score != 7 for score in expected) > CONTACTS // 2
    assert scores(ids) == expected
    # Both workers took chunks
    assert chunks_taken(first) > 0 and chunks_taken(second) > 0
    assert chunks_taken(first) + chunks_taken(second) == chunks
    # and a rerun changes nothing
    assert total(recompute_scores.delay(now=NOW.isoformat()))["changed"] == 0


def test_a_recompute_whose_worker_was_killed_is_finished_by_a_rerun(workers, account):
    ids = stale_contacts_with_events()
    expected = one_process_scores(ids)
    chunk, _ = chunk_of(ids)
    knobs = {"FAULTS_SCORE_CHUNK": chunk, "FAULTS_STEP_PAUSE": 1}
    doomed, survivor = workers(**knobs), workers(**knobs)

    # Given a recompute whose first worker is killed with -9 once a chunk has rescored
    # contacts
    recompute_scores.delay(now=NOW.isoformat())
    wait_for(lambda: Contact.objects.exclude(lead_score=7).exists(), "a chunk", doomed)
    doomed.kill()
    assert scores(ids) != expected  # chunks left

    # When the recompute runs again (the beat's next day, or by hand)
    result = total(recompute_scores.delay(now=NOW.isoformat()))

    # Then the scores are the one-process recompute's
    assert scores(ids) == expected
    assert 0 < result["changed"] <= CONTACTS
    assert chunks_taken(survivor) >= result["chunks"]  # the rerun's, and some of the first's
