"""Lead scoring (workflows): rules, incremental scoring on ingestion, the full recompute."""

import datetime as dt
import io
import json
import re

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.db.models import Min

from contacts.engagement.services import engagement_events_ingest
from contacts.intake.models import Form
from contacts.intake.services import (
    form_save,
    form_submit,
)
from contacts.models import Contact
from tests.conftest import at
from tests.factories import ContactFactory
from workflows import scoring
from workflows.models import ScoringRule
from workflows.scoring import (
    scores_apply_events,
    scores_recompute,
    scores_recompute_chunk,
    scores_recompute_chunks,
)
from workflows.tasks import recompute_scores

NOW = at(2026, 6, 1, 12)
MAY_1 = at(2026, 5, 1)


def rule(event_type, points, **fields):
    return ScoringRule.objects.create(event_type=event_type, points=points, **fields)


def ingest(items, now=NOW):
    """As the engagement API does: store, and score what was stored, in one transaction."""
    with transaction.atomic():
        batch = engagement_events_ingest(items=items, now=now, notify=False)
        scores_apply_events(events=batch.new_events, now=now)
    return batch


def ev(contact, external_id, type="email_open", when=MAY_1):
    return {
        "contact_id": contact.pk,
        "type": type,
        "occurred_at": when.isoformat(),
        "external_id": external_id,
    }


def scores(*contacts):
    return list(
        Contact.objects.filter(pk__in=[c.pk for c in contacts])
        .order_by("pk")
        .values_list("lead_score", flat=True)
    )


# --- rules ---------------------------------------------------------------------------


def test_a_rule_has_a_window_or_a_half_life_not_both(db):
    both = ScoringRule(event_type="email_open", points=5, window_days=30, half_life_days=10)
    with pytest.raises(ValidationError) as error:
        both.full_clean()
    assert error.value.message_dict == {
        "half_life_days": ["Choose a window or a half-life, not both."]
    }
    # The database refuses it too.
    with pytest.raises(IntegrityError), transaction.atomic():
        both.save()
    assert ScoringRule.objects.count() == 0


def test_rule_names_say_what_they_count(db):
    assert str(rule("email_click", 5)) == "Email click +5"
    assert str(rule("page_view", -2, window_days=90)) == "Page view -2 (last 90 days)"
    assert str(rule("chat", 8, half_life_days=30, name="Chats")) == "Chats (half-life 30 days)"


# --- incremental -----------------------------------------------------------------------


def test_ingestion_adds_the_points_of_the_new_events(db):
    # Given plain rules, two for opens, one negative, and one disabled
    rule("email_open", 2)
    rule("email_open", 1)
    rule("page_view", -1)
    rule("chat", 50, enabled=False)
    ann, bob, cid = ContactFactory(), ContactFactory(), ContactFactory()
    Contact.objects.filter(pk=bob.pk).update(lead_score=10)
    # When events arrive: two opens for Ann, a page view for Bob, a chat for Cid
    batch = ingest(
        [
            ev(ann, "a1"),
            ev(ann, "a2"),
            ev(bob, "b1", type="page_view"),
            ev(cid, "c1", type="chat"),
        ]
    )
    # Then Ann has 2 × 3, Bob 10 − 1, Cid nothing (his rule is off)
    assert batch.created == 4
    assert scores(ann, bob, cid) == [6, 9, 0]


def test_scoring_after_the_ingestion_gives_the_same_scores(db):
    # Given the same rules and events, scored in the ingestion's transaction for Ann (the
    # API's way) and by scores_apply_events afterwards, on its own, for Bob
    rule("email_open", 2)
    rule("chat", 5, half_life_days=10)
    ann, bob = ContactFactory(), ContactFactory()
    day = NOW - dt.timedelta(days=3)
    ingest([ev(ann, "a1", when=day), ev(ann, "a2", type="chat", when=day)])
    batch = engagement_events_ingest(
        items=[ev(bob, "b1", when=day), ev(bob, "b2", type="chat", when=day)],
        now=NOW,
        notify=False,
    )
    changed = scores_apply_events(events=batch.new_events, now=NOW)
    # Then both have 2 + 5 × 0.5^0.3 ≈ 6.06 → 6
    assert (changed, scores(ann, bob)) == (1, [6, 6])


def test_a_retry_scores_nothing_twice(db):
    rule("email_click", 5)
    ann = ContactFactory()
    items = [ev(ann, "a1", type="email_click"), ev(ann, "a2", type="email_click")]
    ingest(items)
    ingest(items)
    ingest([ev(ann, "a2", type="email_click"), ev(ann, "a3", type="email_click")])
    assert scores(ann) == [15]


def test_incremental_scores_equal_the_recompute_for_plain_rules(db):
    # Given plain rules over every type, and contacts with a few batches of events
    points = {
        "email_open": 1,
        "email_click": 3,
        "form_submission": 10,
        "page_view": -1,
        "ad_click": 4,
        "chat": 7,
        "meeting_booked": 25,
    }
    for event_type, value in points.items():
        rule(event_type, value)
    rule("email_click", 2)  # a second rule for a type
    contacts = ContactFactory.create_batch(12)
    types = list(points)
    for batch_no in range(4):
        ingest(
            [
                ev(
                    contacts[(n * 7 + batch_no) % 12],
                    f"b{batch_no}-{n}",
                    type=types[(n + batch_no) % len(types)],
                    when=at(2026, 1, 1) + dt.timedelta(hours=n * 13 + batch_no),
                )
                for n in range(40)
            ]
        )
    incremental = scores(*contacts)
    # When every score is recomputed from the events
    result = scores_recompute(now=NOW)
    # Then nothing changes: the incremental scores were exact
    assert result.changed == 0
    assert scores(*contacts) == incremental
    assert sum(incremental) != 0


def test_ingestion_adds_a_windowed_rule_s_current_value_and_the_recompute_catches_up(db):
    # Given a rule counting only the last 30 days' page views
    rule("page_view", 4, window_days=30)
    ann = ContactFactory()
    # When a view of 10 days ago and one of 40 days ago arrive on 1 June
    ingest(
        [
            ev(ann, "recent", type="page_view", when=NOW - dt.timedelta(days=10)),
            ev(ann, "old", type="page_view", when=NOW - dt.timedelta(days=40)),
        ]
    )
    # Then only the recent one counts
    assert scores(ann) == [4]
    # When the score is recomputed 25 days later, the recent one has left the window too
    result = scores_recompute(now=NOW + dt.timedelta(days=25))
    assert (result.changed, scores(ann)) == (1, [0])
    # and the window's edge is included: exactly 30 days old still counts
    assert scores_recompute(now=NOW + dt.timedelta(days=20)).changed == 1
    assert scores(ann) == [4]


def test_decay_halves_the_points_every_half_life(db):
    # Given a decaying rule: 100 points, half-life 10 days
    rule("meeting_booked", 100, half_life_days=10)
    ann, bob, cid = ContactFactory(), ContactFactory(), ContactFactory()
    # When events of 10, 20 and 0 days ago are scored at ingestion
    ingest(
        [
            ev(ann, "a", type="meeting_booked", when=NOW - dt.timedelta(days=10)),
            ev(bob, "b", type="meeting_booked", when=NOW - dt.timedelta(days=20)),
            ev(cid, "c", type="meeting_booked", when=NOW),
        ]
    )
    # Then they are worth 50, 25 and 100
    assert scores(ann, bob, cid) == [50, 25, 100]
    # When the recompute runs at the same instant, it agrees
    assert scores_recompute(now=NOW).changed == 0
    # and 10 days later each has halved again
    assert scores_recompute(now=NOW + dt.timedelta(days=10)).changed == 3
    assert scores(ann, bob, cid) == [25, 13, 50]  # 12.5 rounds half up, on every database


def test_the_recompute_rounds_each_contact_s_total_once(db):
    # Given three events of 5 days ago, each worth 10 × 0.5^(5/10) ≈ 7.07
    rule("email_open", 10, half_life_days=10)
    ann = ContactFactory()
    five_days_ago = NOW - dt.timedelta(days=5)
    engagement_events_ingest(
        items=[ev(ann, f"e{n}", when=five_days_ago) for n in range(3)], now=NOW, notify=False
    )
    # When the score is recomputed: round(21.21), not 3 × round(7.07)
    scores_recompute(now=NOW)
    assert scores(ann) == [21]


def test_decay_counts_an_event_stamped_ahead_of_now_at_full_value(db):
    rule("chat", 10, half_life_days=7)
    ann = ContactFactory()
    engagement_events_ingest(
        items=[ev(ann, "soon", type="chat", when=NOW + dt.timedelta(minutes=30))],
        now=NOW,
        notify=False,
    )
    scores_recompute(now=NOW)
    assert scores(ann) == [10]


# --- the recompute ---------------------------------------------------------------------


def test_the_recompute_sets_contacts_without_scored_events_to_zero(db):
    # Given a rule for clicks, a contact with a stale score and no event, one with only
    # unscored events, and one with a click
    rule("email_click", 5)
    stale, unscored, clicker = ContactFactory(), ContactFactory(), ContactFactory()
    Contact.objects.filter(pk__in=[stale.pk, unscored.pk, clicker.pk]).update(lead_score=99)
    engagement_events_ingest(
        items=[ev(unscored, "u", type="page_view"), ev(clicker, "c", type="email_click")],
        now=NOW,
        notify=False,
    )
    # When the scores are recomputed
    result = scores_recompute(now=NOW)
    # Then they are what the rules say
    assert scores(stale, unscored, clicker) == [0, 0, 5]
    assert (result.rules, result.changed, result.dry_run) == (1, 3, False)


def test_without_enabled_rules_the_recompute_touches_nothing(db):
    # Given scores kept by hand and only a disabled rule
    rule("email_click", 5, enabled=False)
    ann = ContactFactory()
    Contact.objects.filter(pk=ann.pk).update(lead_score=42)
    # When the scores are recomputed, then scoring is off and the score stays
    result = scores_recompute(now=NOW)
    assert (result.rules, result.chunks, result.changed) == (0, 0, 0)
    assert scores(ann) == [42]


def test_a_dry_run_counts_and_writes_nothing(db):
    rule("email_click", 5)
    ann, bob = ContactFactory(), ContactFactory()
    Contact.objects.filter(pk=ann.pk).update(lead_score=7)
    engagement_events_ingest(items=[ev(bob, "b", type="email_click")], now=NOW, notify=False)
    result = scores_recompute(now=NOW, dry_run=True)
    assert (result.changed, result.dry_run) == (2, True)
    assert scores(ann, bob) == [7, 0]


def test_contacts_since_limits_the_recompute_to_recently_engaged_contacts(db):
    rule("email_click", 5)
    old = ContactFactory(last_engaged_at=at(2026, 1, 1))
    recent = ContactFactory(last_engaged_at=at(2026, 5, 20))
    Contact.objects.filter(pk__in=[old.pk, recent.pk]).update(lead_score=3)
    result = scores_recompute(now=NOW, contacts_since=at(2026, 5, 1))
    assert result.changed == 1
    assert scores(old, recent) == [3, 0]


def test_the_recompute_works_chunk_by_chunk(db, monkeypatch):
    # Given chunks of 2 contact ids and 5 contacts with a click each
    monkeypatch.setattr("workflows.scoring.SCORE_RECOMPUTE_CHUNK", 2)
    rule("email_click", 5)
    contacts = ContactFactory.create_batch(5)
    engagement_events_ingest(
        items=[ev(c, f"e{c.pk}", type="email_click") for c in contacts], now=NOW, notify=False
    )
    seen = []
    # When the scores are recomputed
    result = scores_recompute(now=NOW, progress=lambda done, total: seen.append((done, total)))
    # Then every chunk from the first contact's id to the last was visited, and every
    # contact scored
    first, last = min(c.pk for c in contacts), max(c.pk for c in contacts)
    assert result.chunks == len(range(first, last + 1, 2))
    assert seen[-1] == (last, last)
    assert scores(*contacts) == [5] * 5


def test_the_command_recomputes_and_reports(db):
    rule("form_submission", 10)
    ann = ContactFactory()
    engagement_events_ingest(items=[ev(ann, "f", type="form_submission")], now=NOW, notify=False)
    out = io.StringIO()
    call_command("recompute_scores", "--dry-run", "--no-progress", stdout=out)
    # (the chunk count follows the ids, which PostgreSQL's sequences do not reset per test)
    assert re.match(r"1 lead scores would change \(1 rules, \d+ chunks, ", out.getvalue())
    assert scores(ann) == [0]
    out = io.StringIO()
    call_command(
        "recompute_scores", "--contacts-since", "2026-04-30", stdout=out, stderr=io.StringIO()
    )
    assert re.match(r"1 lead scores changed \(1 rules, \d+ chunks, ", out.getvalue())
    assert scores(ann) == [10]


def test_the_command_refuses_a_bad_date(db):
    with pytest.raises(CommandError, match="--contacts-since 'yesterday': expected a date"):
        call_command("recompute_scores", "--contacts-since", "yesterday")


def test_the_command_says_when_scoring_is_off(db):
    out = io.StringIO()
    call_command("recompute_scores", "--no-progress", stdout=out)
    assert out.getvalue() == "No enabled scoring rule: scoring is off, no score was touched.\n"


def test_the_task_recomputes(db):
    rule("email_click", 5)
    ann = ContactFactory()
    engagement_events_ingest(items=[ev(ann, "c", type="email_click")], now=NOW, notify=False)
    result = recompute_scores.delay().get()
    assert (result["rules"], result["changed"], result["dry_run"]) == (1, 1, False)
    assert scores(ann) == [5]


# --- the recompute shared by workers (the task: a chord of chunk tasks) -------------------


@pytest.fixture
def scored_contacts(db, monkeypatch):
    """Chunks of 3 contact ids; plain, windowed and decaying rules; 14 contacts with stale
    scores, most with a few events of every kind and age, some with none."""
    monkeypatch.setattr("workflows.scoring.SCORE_RECOMPUTE_CHUNK", 3)
    rule("email_open", 1)
    rule("email_click", 3)
    rule("email_click", 5, half_life_days=14)
    rule("page_view", 2, window_days=30)
    rule("form_submission", -4)
    contacts = ContactFactory.create_batch(14)
    types = ["email_open", "email_click", "page_view", "form_submission", "chat"]
    items = [
        ev(
            contact,
            f"s{contact.pk}-{n}",
            type=types[(i + n) % 5],
            when=NOW - dt.timedelta(days=7 * n + i),
        )
        for i, contact in enumerate(contacts)
        if i % 4 != 3
        for n in range(i % 5 + 1)
    ]
    engagement_events_ingest(items=items, now=NOW, notify=False)
    stale(contacts)
    return contacts


def stale(contacts):
    for n, contact in enumerate(contacts):
        Contact.objects.filter(pk=contact.pk).update(lead_score=100 + n)


def test_the_shared_recompute_gives_the_one_process_scores(scored_contacts):
    # Given the scores the one-process recompute gives, and the stale scores back
    alone = scores_recompute(now=NOW)
    expected = scores(*scored_contacts)
    stale(scored_contacts)
    # When the task shares the same recompute out in chunks
    result = recompute_scores.delay(now=NOW.isoformat()).get()
    # Then every score is the same, and so are the counts
    assert scores(*scored_contacts) == expected
    assert len(set(expected)) > 5  # the data exercises every kind of rule
    assert alone.chunks > 4
    assert (result["rules"], result["chunks"], result["changed"], result["dry_run"]) == (
        5,
        alone.chunks,
        alone.changed,
        False,
    )
    # and a rerun changes nothing
    assert recompute_scores.delay(now=NOW.isoformat()).get()["changed"] == 0
    assert scores(*scored_contacts) == expected


def test_a_shared_dry_run_counts_and_writes_nothing(scored_contacts):
    before = scores(*scored_contacts)
    counted = scores_recompute(now=NOW, dry_run=True)
    result = recompute_scores.delay(now=NOW.isoformat(), dry_run=True).get()
    assert (result["changed"], result["dry_run"]) == (counted.changed, True)
    assert counted.changed == len(scored_contacts)
    assert scores(*scored_contacts) == before


def test_the_chunks_score_under_the_rules_and_now_the_coordinator_froze(scored_contacts):
    # Given chunks split with the rules and the instant of then
    rules, chunks = scores_recompute_chunks(now=NOW)
    # When a rule is switched off and the chunks run later, in reverse order
    ScoringRule.objects.filter(event_type="email_open").update(enabled=False)
    changed = sum(scores_recompute_chunk(**chunk) for chunk in reversed(chunks))
    # Then the scores are those of the frozen rules at the frozen instant
    frozen = scores(*scored_contacts)
    ScoringRule.objects.filter(event_type="email_open").update(enabled=True)
    stale(scored_contacts)
    assert scores_recompute(now=NOW).changed == changed
    assert scores(*scored_contacts) == frozen
    assert (rules, json.loads(json.dumps(chunks))) == (5, chunks)  # a task's JSON arguments


def test_after_a_failed_chunk_a_rerun_gives_the_same_scores(scored_contacts, monkeypatch):
    alone = scores_recompute(now=NOW)
    expected = scores(*scored_contacts)
    stale(scored_contacts)
    # Given that the chunk of the 8th contact fails (its transaction rolled back)
    real = scoring.scores_recompute_range
    # Chunks of 3 ids from the first contact's: [first, first + 3), [first + 3, first + 6), …
    first = Contact.objects.aggregate(first=Min("pk"))["first"]
    failing = first + (scored_contacts[7].pk - first) // 3 * 3

    def fail_one(**kwargs):
        if kwargs["id_range"][0] == failing:
            raise RuntimeError("the database went away")
        return real(**kwargs)

    monkeypatch.setattr("workflows.scoring.scores_recompute_range", fail_one)
    with pytest.raises(RuntimeError, match="went away"):
        recompute_scores.delay(now=NOW.isoformat()).get()
    assert scores(*scored_contacts) != expected
    # When the whole recompute runs again
    monkeypatch.setattr("workflows.scoring.scores_recompute_range", real)
    result = recompute_scores.delay(now=NOW.isoformat()).get()
    # Then the end state is the one-process recompute's
    assert scores(*scored_contacts) == expected
    assert 0 < result["changed"] < alone.changed


def test_the_shared_recompute_with_contacts_since_and_scoring_off(scored_contacts):
    old, recent = scored_contacts[0], scored_contacts[1]
    Contact.objects.update(last_engaged_at=at(2026, 1, 1))
    Contact.objects.filter(pk=recent.pk).update(last_engaged_at=at(2026, 5, 20))
    result = recompute_scores.delay(contacts_since="2026-05-01T00:00:00+00:00").get()
    assert result["changed"] == 1
    assert scores(old) == [100]
    ScoringRule.objects.update(enabled=False)
    assert recompute_scores.delay().get() == {
        "rules": 0,
        "chunks": 0,
        "changed": 0,
        "dry_run": False,
        "seconds": 0.0,
    }


# --- intake scores through the hook ------------------------------------------------------


def test_a_form_submission_scores_through_the_engagement_hook(
    db, account, django_capture_on_commit_callbacks
):
    # Given a rule for form submissions and a form
    rule("form_submission", 15)
    form = form_save(
        form=Form(name="Newsletter", slug="newsletter", fields=[{"name": "first_name"}])
    )
    # When a visitor submits it twice (two submissions)
    with django_capture_on_commit_callbacks(execute=True):
        form_submit(form=form, data={"email": "new@example.com", "first_name": "Ann"})
    with django_capture_on_commit_callbacks(execute=True):
        form_submit(form=form, data={"email": "new@example.com", "first_name": "Ann"})
    # Then the contact scored both, after each commit
    contact = Contact.objects.get(email="new@example.com")
    assert contact.lead_score == 30
    assert contact.engagement_events.count() == 2
    # and the recompute agrees
    assert scores_recompute().changed == 0
