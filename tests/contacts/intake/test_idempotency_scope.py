"""A client's idempotency key belongs to the channel it was sent to.

A submission id, a conversation id or a platform lead id is unique within its form,
chatflow or ad account, never across them: the same id sent to two channels is two
submissions, and only a retry to the same channel is recognised and stores nothing.
"""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from contacts.engagement.models import EngagementEvent
from contacts.intake.models import AdLead, Chatflow, Form, FormSubmission
from contacts.intake.services import (
    ad_account_create,
    chatflow_save,
    external_form_submit,
    form_save,
    form_submit,
)
from contacts.models import Contact
from tests.concurrency import run_together

EXTERNAL = "/api/intake/external-forms/"


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    cache.clear()
    yield
    cache.clear()


def external_body(form_id: str, email: str, submission_id: str) -> dict:
    return {"form_id": form_id, "fields": {"email": email}, "submission_id": submission_id}


def stored_submissions() -> list[tuple]:
    return list(
        FormSubmission.objects.order_by("id").values_list(
            "form__slug", "external_form", "submission_id", "contact__email"
        )
    )


def test_one_submission_id_sent_to_two_external_forms_stores_both(account):
    client = APIClient()

    to_a = client.post(EXTERNAL, external_body("form-a", "a@example.org", "s-1"), format="json")
    to_b = client.post(EXTERNAL, external_body("form-b", "b@example.org", "s-1"), format="json")

    assert (to_a.status_code, to_b.status_code) == (201, 201)
    assert set(Contact.objects.values_list("email", flat=True)) == {
        "a@example.org",
        "b@example.org",
    }
    assert stored_submissions() == [
        (None, "form-a", "s-1", "a@example.org"),
        (None, "form-b", "s-1", "b@example.org"),
    ]


def test_the_idempotency_header_is_scoped_to_the_external_form_too(account):
    client = APIClient()

    for form_id, email in [("form-a", "a@example.org"), ("form-b", "b@example.org")]:
        response = client.post(
            EXTERNAL,
            {"form_id": form_id, "fields": {"email": email}},
            format="json",
            HTTP_IDEMPOTENCY_KEY="k-1",
        )
        assert response.status_code == 201

    assert [row[1:] for row in stored_submissions()] == [
        ("form-a", "k-1", "a@example.org"),
        ("form-b", "k-1", "b@example.org"),
    ]


def test_a_retry_to_the_same_external_form_stores_nothing_new(account):
    first = external_form_submit(
        form_identifier="form-a", data={"email": "a@example.org"}, submission_id="s-1"
    )
    retry = external_form_submit(
        form_identifier="form-a", data={"email": "a@example.org"}, submission_id="s-1"
    )

    assert (first.replayed, retry.replayed) == (False, True)
    assert retry.submission == first.submission
    assert retry.intake is None
    assert FormSubmission.objects.count() == 1
    assert EngagementEvent.objects.count() == 1


def test_one_submission_id_on_two_of_our_forms_and_an_external_one_stores_all(account):
    forms = [
        form_save(form=Form(name=name, slug=name.lower(), fields=[])) for name in ("Alpha", "Beta")
    ]

    results = [
        form_submit(form=form, data={"email": f"{form.slug}@example.org"}, submission_id="s-1")
        for form in forms
    ]
    results.append(
        external_form_submit(
            form_identifier="alpha", data={"email": "ext@example.org"}, submission_id="s-1"
        )
    )
    retry = form_submit(form=forms[0], data={"email": "alpha@example.org"}, submission_id="s-1")

    assert [result.replayed for result in results] == [False, False, False]
    assert retry.replayed is True
    assert stored_submissions() == [
        ("alpha", "", "s-1", "alpha@example.org"),
        ("beta", "", "s-1", "beta@example.org"),
        (None, "alpha", "s-1", "ext@example.org"),
    ]


def test_one_conversation_id_on_two_chatflows_is_two_chats(account):
    bots = [chatflow_save(chatflow=Chatflow(name=name)) for name in ("Sales bot", "Help bot")]
    client = APIClient()

    for bot, email in zip(bots, ["a@example.org", "b@example.org"], strict=True):
        body = {"email": email, "conversation_id": "c-1"}
        assert client.post(f"/api/intake/chatflows/{bot.pk}/", body, format="json").status_code == (
            201
        )
    retry = client.post(
        f"/api/intake/chatflows/{bots[0].pk}/",
        {"email": "a@example.org", "conversation_id": "c-1"},
        format="json",
    )

    assert retry.status_code == 201
    assert sorted(
        EngagementEvent.objects.filter(type="chat").values_list("contact__email", flat=True)
    ) == ["a@example.org", "b@example.org"]


def test_one_lead_id_from_two_ad_accounts_is_two_leads(account):
    accounts = [
        ad_account_create(name=name, platform="facebook") for name in ("FB shop", "FB brand")
    ]

    answers = []
    for (ads, token), email in zip(accounts, ["a@example.org", "b@example.org"], strict=True):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        answers.append(
            client.post(
                f"/api/intake/ads/{ads.pk}/leads/",
                {"lead_id": "L-1", "email": email},
                format="json",
            ).data["results"][0]["status"]
        )

    assert answers == ["created", "created"]
    assert sorted(AdLead.objects.values_list("lead_id", "contact__email")) == [
        ("L-1", "a@example.org"),
        ("L-1", "b@example.org"),
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_submission_id_sent_at_once_to_one_form_and_to_another(account):
    # Given a submission id that 6 clients send to form A and 2 to form B, all at once
    def send(form_id: str, email: str):
        return lambda: (
            APIClient()
            .post(EXTERNAL, external_body(form_id, email, "s-1"), format="json")
            .status_code
        )

    codes = run_together(
        *[send("form-a", "a@example.org") for _ in range(6)],
        *[send("form-b", "b@example.org") for _ in range(2)],
    )

    # Then each form stores it once, and every client was answered
    assert codes == [201] * 8
    assert sorted(stored_submissions()) == [
        (None, "form-a", "s-1", "a@example.org"),
        (None, "form-b", "s-1", "b@example.org"),
    ]
    assert EngagementEvent.objects.filter(type="form_submission").count() == 2
