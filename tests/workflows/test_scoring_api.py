"""The engagement API (POST /api/engagement-events/), the scoring-rules API and admin."""

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from contacts.engagement.models import EngagementEvent
from contacts.models import Contact
from tests.factories import ContactFactory, UserFactory
from workflows.models import ScoringRule

URL = "/api/engagement-events/"
RULES = "/api/scoring-rules/"


@pytest.fixture
def ops(db):
    return UserFactory(username="ops", groups=["Marketing ops"])


@pytest.fixture
def auditor(db):
    return UserFactory(username="auditor", groups=["Auditor"])


@pytest.fixture
def sales(db):
    return UserFactory(username="sales", groups=["Sales"])


def api(user=None):
    client = APIClient()
    if user is not None:
        client.force_authenticate(user)
    return client


def ev(contact, external_id, type="email_click", occurred_at="2026-05-01T10:00:00Z"):
    return {
        "contact_id": contact.pk,
        "type": type,
        "occurred_at": occurred_at,
        "external_id": external_id,
    }


def test_a_batch_is_stored_scored_and_reported(ops):
    # Given a rule and two contacts
    ScoringRule.objects.create(event_type="email_click", points=5)
    ann = ContactFactory(email="ann@example.com")
    bob = ContactFactory(email="bob@example.com")
    body = {
        "events": [
            ev(ann, "c-1"),
            {**ev(ann, "c-2"), "contact_id": None, "email": "ANN@example.com"},
            ev(bob, "c-1"),
            {**ev(bob, "c-3"), "type": "tweet"},
        ]
    }
    # When a marketing ops user posts the batch (token auth), then the same again
    token = Token.objects.create(user=ops)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    first = client.post(URL, body, format="json")
    retry = client.post(URL, body, format="json")
    # Then the first stores and scores the good items, and reports every one
    assert first.status_code == 200
    assert first.json() == {
        "created": 2,
        "duplicates": 1,
        "errors": 1,
        "scored_contacts": 1,
        "items": [
            {"index": 0, "status": "created", "contact_id": ann.pk, "external_id": "c-1",
             "messages": []},
            {"index": 1, "status": "created", "contact_id": ann.pk, "external_id": "c-2",
             "messages": []},
            {"index": 2, "status": "duplicate", "contact_id": bob.pk, "external_id": "c-1",
             "messages": ["The same external_id as item 0."]},
            {"index": 3, "status": "error", "contact_id": None, "external_id": "c-3",
             "messages": ["type: 'tweet' is not one of email_open, email_click, "
                          "form_submission, page_view, ad_click, chat, meeting_booked."]},
        ],
    }  # fmt: skip
    # and the retry finds everything recorded: nothing stored or scored twice
    assert retry.status_code == 200
    assert [i["status"] for i in retry.json()["items"]] == [
        "duplicate",
        "duplicate",
        "duplicate",
        "error",
    ]
    assert retry.json()["scored_contacts"] == 0
    assert EngagementEvent.objects.count() == 2
    assert Contact.objects.get(pk=ann.pk).lead_score == 10
    assert Contact.objects.get(pk=bob.pk).lead_score == 0
    assert Contact.objects.get(pk=ann.pk).last_engaged_at.isoformat() == "2026-05-01T10:00:00+00:00"


def test_10001_events_are_refused_as_a_whole(ops):
    ann = ContactFactory()
    body = {"events": [ev(ann, f"e-{n}") for n in range(10_001)]}
    response = api(ops).post(URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["events"] == [
        "At most 10,000 events a request; got 10,001. Split the batch."
    ]
    assert EngagementEvent.objects.count() == 0


@pytest.mark.parametrize("body", [{}, {"events": []}, {"events": "x"}, [1, 2]])
def test_a_body_without_a_list_of_events_is_a_400(ops, body):
    response = api(ops).post(URL, body, format="json")
    assert response.status_code == 400
    assert response.json()["events"] == ["Send a JSON object with a non-empty list `events`."]


def test_anonymous_is_401_and_without_the_permission_403_and_nothing_changes(sales, auditor):
    ann = ContactFactory()
    body = {"events": [ev(ann, "e-1")]}
    assert api().post(URL, body, format="json").status_code == 401
    assert api(sales).post(URL, body, format="json").status_code == 403
    assert api(auditor).post(URL, body, format="json").status_code == 403
    assert EngagementEvent.objects.count() == 0
    assert Contact.objects.get(pk=ann.pk).last_engaged_at is None


def test_rules_api_validates_and_recompute_needs_change_permission(ops, auditor):
    # Given a rule made through the API
    made = api(ops).post(RULES, {"event_type": "chat", "points": 8}, format="json")
    assert made.status_code == 201
    bad = api(ops).post(
        RULES,
        {"event_type": "chat", "points": 8, "window_days": 30, "half_life_days": 7},
        format="json",
    )
    assert bad.status_code == 400
    assert bad.json() == {"half_life_days": ["Choose a window or a half-life, not both."]}
    ann = ContactFactory()
    api(ops).post(URL, {"events": [ev(ann, "c", type="chat")]}, format="json")
    Contact.objects.filter(pk=ann.pk).update(lead_score=0)
    # When the auditor asks for a recompute, then it is refused and nothing changes
    assert api(auditor).get(RULES).status_code == 200
    assert api(auditor).post(f"{RULES}recompute/").status_code == 403
    assert Contact.objects.get(pk=ann.pk).lead_score == 0
    # When marketing ops asks for a dry run, then a recompute
    dry = api(ops).post(f"{RULES}recompute/?dry_run=true")
    done = api(ops).post(f"{RULES}recompute/")
    assert (dry.json()["changed"], dry.json()["dry_run"]) == (1, True)
    assert (done.json()["changed"], done.json()["rules"]) == (1, 1)
    assert Contact.objects.get(pk=ann.pk).lead_score == 8


# --- admin -------------------------------------------------------------------------------


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_admin_edits_rules_and_refuses_a_window_with_a_half_life(ops):
    client = admin_client(ops)
    response = client.post(
        "/admin/workflows/scoringrule/add/",
        {"name": "", "event_type": "email_open", "points": "3", "enabled": "on",
         "window_days": "30", "half_life_days": "10"},
    )  # fmt: skip
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        "half_life_days": ["Choose a window or a half-life, not both."]
    }
    assert ScoringRule.objects.count() == 0
    response = client.post(
        "/admin/workflows/scoringrule/add/",
        {"name": "", "event_type": "email_open", "points": "3", "enabled": "on",
         "window_days": "30", "half_life_days": ""},
    )  # fmt: skip
    assert response.status_code == 302
    assert [str(r) for r in ScoringRule.objects.all()] == ["Email open +3 (last 30 days)"]


def test_admin_recompute_button_for_those_who_may_change_rules(ops, auditor):
    # Given a rule and a contact whose score is stale
    ScoringRule.objects.create(event_type="email_click", points=5)
    ann = ContactFactory()
    api(ops).post(URL, {"events": [ev(ann, "c")]}, format="json")
    Contact.objects.filter(pk=ann.pk).update(lead_score=1)
    changelist = "/admin/workflows/scoringrule/"
    recompute = "/admin/workflows/scoringrule/recompute/"
    # The auditor sees the rules, without the button, and may not recompute
    page = admin_client(auditor).get(changelist)
    assert page.status_code == 200
    assert b"recompute-scores-button" not in page.content
    assert admin_client(auditor).post(recompute).status_code == 403
    assert Contact.objects.get(pk=ann.pk).lead_score == 1
    # Marketing ops sees the button; a GET does nothing, the POST recomputes
    client = admin_client(ops)
    assert b"recompute-scores-button" in client.get(changelist).content
    assert client.get(recompute).status_code == 405
    response = client.post(recompute, follow=True)
    assert [str(m) for m in response.context["messages"]][0].startswith(
        "Lead scores recomputed: 1 changed (1 rules, "
    )
    assert Contact.objects.get(pk=ann.pk).lead_score == 5


def test_auditor_views_events_in_the_admin_but_changes_nothing(ops, auditor):
    ann = ContactFactory()
    api(ops).post(URL, {"events": [ev(ann, "c")]}, format="json")
    event = EngagementEvent.objects.get()
    client = admin_client(auditor)
    assert client.get("/admin/contacts/engagementevent/").status_code == 200
    assert client.get(f"/admin/contacts/engagementevent/{event.pk}/change/").status_code == 200
    assert client.post(f"/admin/contacts/engagementevent/{event.pk}/delete/").status_code == 403
    assert EngagementEvent.objects.count() == 1
