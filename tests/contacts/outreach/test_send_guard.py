"""The marketing-send guard (DESIGN §1.1): breakdown, sending, resume, unsubscribe,
non-marketing communication."""

import datetime as dt

import pytest
from django.core import mail, signing
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from contacts.models import Contact
from contacts.outreach import services
from contacts.outreach.models import (
    Communication,
    CommunicationType,
    EmailSend,
    EmailSendStatus,
    MarketingEmail,
    MarketingEmailStatus,
    Unsubscription,
)
from contacts.outreach.selectors import (
    marketing_email_audience,
    marketing_send_breakdown,
)
from contacts.outreach.services import (
    AlreadySent,
    SendRefused,
    communication_send,
    marketing_email_create,
    marketing_email_deliver,
    marketing_email_release_stale_claims,
    marketing_email_send,
    unsubscribe_token,
)
from contacts.services import contact_update
from contacts.status.results import StatusSource
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from contacts.tasks import send_marketing_email
from tests.factories import ContactFactory

pytestmark = pytest.mark.usefixtures("account")

SOURCE = StatusSource("manual", name="test")
BODY = "Hello {first_name},\n\nNews.\n\nUnsubscribe: {unsubscribe_url}\n"


def marketing(*contacts):
    contacts_set_marketing(contacts=[c.pk for c in contacts], source=SOURCE)


@pytest.fixture
def audience():
    """Six leads, one of each case, and a marketing customer outside the filter."""
    people = {
        "ok1": ContactFactory(email="ok1@example.com", first_name="Ann"),
        "ok2": ContactFactory(email="ok2@example.com", first_name="Bob"),
        "non": ContactFactory(email="non@example.com"),
        "non_unsub": ContactFactory(email="non-unsub@example.com", unsubscribed=True),
        "unsub_bounced": ContactFactory(
            email="unsub-bounced@example.com", unsubscribed=True, hard_bounced=True
        ),
        "bounced": ContactFactory(email="bounced@example.com", hard_bounced=True),
        "customer": ContactFactory(email="customer@example.com", lifecycle_stage="customer"),
    }
    marketing(
        people["ok1"],
        people["ok2"],
        people["unsub_bounced"],
        people["bounced"],
        people["customer"],
    )
    return people


@pytest.fixture
def email(audience):
    return marketing_email_create(
        name="Spring news",
        subject="Spring",
        body=BODY,
        audience_filter={"lifecycle_stage": "lead"},
    )


def recipients() -> list[str]:
    return sorted(address for message in mail.outbox for address in message.to)


# --- the breakdown ---


def test_breakdown_counts_each_excluded_contact_once_in_one_query(email):
    # Given six leads: two sendable, one non-marketing, one non-marketing AND unsubscribed,
    # one marketing unsubscribed AND bounced, one marketing bounced
    audience = marketing_email_audience(email=email)

    # When the breakdown is computed
    with CaptureQueriesContext(connection) as queries:
        breakdown = marketing_send_breakdown(contacts=audience, email=email)

    # Then each exclusion is counted once under the precedence, per reason with overlaps too
    assert breakdown.as_dict() == {
        "audience": 6,
        "will_receive": 2,
        "excluded_non_marketing": 2,
        "excluded_unsubscribed": 1,
        "excluded_bounced": 1,
        "unsubscribed_any": 2,
        "bounced_any": 2,
        "already_sent": 0,
        "excluded": 4,
    }
    assert len(queries) == 1


def test_a_pending_downgrade_still_receives(email, audience):
    # Given a sendable contact scheduled non-marketing from the next update date
    contacts_set_non_marketing(contacts=audience["ok1"], source=SOURCE)

    # Then it is still marketing until then, and still receives
    breakdown = marketing_send_breakdown(contacts=marketing_email_audience(email=email))
    assert (breakdown.will_receive, breakdown.excluded_non_marketing) == (2, 2)


# --- sending ---


def test_send_reaches_only_marketing_subscribed_unbounced_contacts(
    email, audience, django_capture_on_commit_callbacks
):
    # When the email is sent (the task runs eagerly after commit)
    with django_capture_on_commit_callbacks(execute=True):
        outcome = marketing_email_send(email=email)

    # Then only the two sendable leads got it, once each, personalised
    assert outcome.breakdown.will_receive == 2
    assert recipients() == ["ok1@example.com", "ok2@example.com"]
    by_address = {message.to[0]: message for message in mail.outbox}
    ann = by_address["ok1@example.com"]
    token = unsubscribe_token(contact_id=audience["ok1"].pk, email_id=email.pk)
    assert ann.subject == "Spring"
    assert (
        ann.body
        == f"Hello Ann,\n\nNews.\n\nUnsubscribe: http://127.0.0.1:8000/unsubscribe/{token}/\n"
    )
    assert ann.extra_headers["List-Unsubscribe"] == f"<http://127.0.0.1:8000/unsubscribe/{token}/>"
    # and the log and the counts say so
    assert sorted(EmailSend.objects.filter(email=email).values_list("to_address", "status")) == [
        ("ok1@example.com", "sent"),
        ("ok2@example.com", "sent"),
    ]
    email.refresh_from_db()
    assert email.status == MarketingEmailStatus.SENT
    assert (email.audience_count, email.recipient_count, email.sent_count, email.failed_count) == (
        6,
        2,
        2,
        0,
    )
    assert (
        email.excluded_non_marketing,
        email.excluded_unsubscribed,
        email.excluded_bounced,
    ) == (2, 1, 1)


def test_a_second_send_of_a_sent_email_sends_nothing(email, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        marketing_email_send(email=email)
    mail.outbox.clear()

    # When it is sent again
    with pytest.raises(AlreadySent), django_capture_on_commit_callbacks(execute=True):
        marketing_email_send(email=email)

    # Then nothing more went out
    assert mail.outbox == []
    assert EmailSend.objects.filter(email=email).count() == 2


def test_a_status_change_between_preview_and_send_is_honoured(
    email, audience, monkeypatch, django_capture_on_commit_callbacks
):
    # Given a third lead, marketing but scheduled non-marketing from the next update date,
    # and the preview (before that date) that counts all three
    late = ContactFactory(email="late@example.com")
    marketing(late)
    result = contacts_set_non_marketing(contacts=late, source=SOURCE)
    assert (
        marketing_send_breakdown(contacts=marketing_email_audience(email=email)).will_receive == 3
    )

    # When, before the send, one unsubscribes, one bounces, and the update date passes
    contact_update(contact=audience["ok1"], unsubscribed=True)
    contact_update(contact=audience["ok2"], hard_bounced=True)
    after_update = result.effective_from + dt.timedelta(hours=1)
    monkeypatch.setattr(timezone, "now", lambda: after_update)
    with django_capture_on_commit_callbacks(execute=True):
        marketing_email_send(email=email)

    # Then none of them gets the email
    assert mail.outbox == []
    assert not EmailSend.objects.exists()
    email.refresh_from_db()
    assert (email.status, email.recipient_count, email.sent_count) == ("sent", 0, 0)


def test_a_killed_send_resumes_without_duplicates(
    email, audience, monkeypatch, django_capture_on_commit_callbacks
):
    # Given more sendable leads, chunks of 2, and a send started but not run (the worker died)
    extra = [ContactFactory(email=f"extra{i}@example.com") for i in range(5)]
    marketing(*extra)
    monkeypatch.setattr(services, "SEND_CHUNK_SIZE", 2)
    with django_capture_on_commit_callbacks(execute=False):
        marketing_email_send(email=email)
    email.refresh_from_db()
    assert (email.status, email.recipient_count) == ("sending", 7)
    # ... which sent one chunk, then died with the next chunk claimed but not confirmed
    audience_qs = marketing_email_audience(email=email)
    first = marketing_email_deliver(email=email, contacts=audience_qs, max_chunks=1)
    assert (first.sent, first.done) == (2, False)
    limbo = extra[0]
    EmailSend.objects.create(
        email=email,
        contact_id=limbo.pk,
        to_address=limbo.email,
        status=EmailSendStatus.CLAIMED,
        claim="dead-worker",
        at=timezone.now(),
    )
    sent_before = recipients()

    # When the task is delivered again (acks_late) — twice, as a duplicate delivery would
    send_marketing_email.apply(args=[email.pk])
    send_marketing_email.apply(args=[email.pk])

    # Then every sendable lead got it exactly once, except the one in limbo (at most once)
    assert len(sent_before) == 2
    everyone = sorted(["ok1@example.com", "ok2@example.com", *[c.email for c in extra]])
    assert recipients() == sorted(set(everyone) - {limbo.email})
    assert len(mail.outbox) == len(set(recipients()))
    email.refresh_from_db()
    assert (email.status, email.sent_count) == ("sent", 6)
    statuses = dict(EmailSend.objects.filter(email=email).values_list("contact_id", "status"))
    assert statuses[limbo.pk] == "claimed"
    assert len(statuses) == 7


def test_a_stale_claim_released_by_the_operator_is_sent_once(
    email, audience, django_capture_on_commit_callbacks
):
    # Given a sent email whose worker died with one contact claimed but never confirmed
    # two hours ago, and one claimed a minute ago (a send that may still be running)
    with django_capture_on_commit_callbacks(execute=True):
        marketing_email_send(email=email)
    stuck, recent = Contact.objects.filter(email__in=["ok1@example.com", "ok2@example.com"])
    EmailSend.objects.filter(email=email).delete()
    mail.outbox.clear()
    for contact, age in ((stuck, dt.timedelta(hours=2)), (recent, dt.timedelta(minutes=1))):
        EmailSend.objects.create(
            email=email,
            contact_id=contact.pk,
            to_address=contact.email,
            status=EmailSendStatus.CLAIMED,
            claim="dead-worker",
            at=timezone.now() - age,
        )

    # When the operator releases the stale claims
    with django_capture_on_commit_callbacks(execute=True):
        released = marketing_email_release_stale_claims(email=email)

    # Then only the stale one is released and sent, once; the recent claim is left alone
    assert released == 1
    assert recipients() == [stuck.email]
    statuses = dict(EmailSend.objects.filter(email=email).values_list("contact_id", "status"))
    assert statuses == {stuck.pk: "sent", recent.pk: "claimed"}
    email.refresh_from_db()
    assert email.status == "sent"
    assert marketing_email_release_stale_claims(email=email) == 0  # nothing left to release


def test_explicit_contacts_go_through_the_same_guard(email, audience):
    # Given a workflow sending the email to a queryset of every contact
    everyone = Contact.objects.all()

    # When it sends
    outcome = marketing_email_send(email=email, contacts=everyone)

    # Then only marketing, subscribed, unbounced contacts got it (the customer too: it was asked)
    assert recipients() == ["customer@example.com", "ok1@example.com", "ok2@example.com"]
    assert outcome.breakdown.excluded == 4
    assert outcome.delivery.sent == 3
    # and a second run sends nobody twice
    marketing_email_send(email=email, contacts=everyone)
    assert len(mail.outbox) == 3


def test_a_failing_address_is_logged_and_the_others_still_go(
    email, audience, monkeypatch, django_capture_on_commit_callbacks
):
    from django.core.mail.backends.locmem import EmailBackend

    original = EmailBackend.send_messages

    def flaky(self, messages):
        if messages[0].to == ["ok1@example.com"]:
            raise OSError("mailbox unavailable")
        return original(self, messages)

    monkeypatch.setattr(EmailBackend, "send_messages", flaky)
    with django_capture_on_commit_callbacks(execute=True):
        marketing_email_send(email=email)

    assert recipients() == ["ok2@example.com"]
    failed = EmailSend.objects.get(contact=audience["ok1"])
    assert (failed.status, failed.error) == ("failed", "OSError: mailbox unavailable")
    email.refresh_from_db()
    assert (email.status, email.sent_count, email.failed_count) == ("sent", 1, 1)


def test_an_email_without_the_unsubscribe_placeholder_is_refused(audience):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as error:
        marketing_email_create(
            name="x", subject="x", body="no link", audience_filter={"lifecycle_stage": "lead"}
        )
    assert "body" in error.value.message_dict
    assert not MarketingEmail.objects.exists()


# --- non-marketing communication ---


def test_a_transactional_email_reaches_a_non_marketing_unsubscribed_contact(audience, sales):
    contact = audience["non_unsub"]

    log = communication_send(
        contact=contact,
        type=CommunicationType.TRANSACTIONAL,
        subject="Your receipt",
        body="Thanks.",
        actor=sales,
    )

    assert recipients() == ["non-unsub@example.com"]
    assert mail.outbox[0].subject == "Your receipt"
    assert (log.type, log.status, log.actor, log.to_address) == (
        "transactional",
        "sent",
        sales,
        "non-unsub@example.com",
    )


def test_communication_refuses_marketing(audience):
    with pytest.raises(SendRefused):
        communication_send(
            contact=audience["ok1"], type="marketing", subject="Promo", body="Buy", actor=None
        )
    assert mail.outbox == []
    assert not Communication.objects.exists()


def test_communication_retry_with_the_same_key_sends_once(audience):
    for _ in range(2):
        log = communication_send(
            contact=audience["ok1"],
            type=CommunicationType.TICKET_REPLY,
            subject="Re: ticket",
            body="Fixed.",
            idempotency_key="ticket-1-reply-1",
        )
    assert len(mail.outbox) == 1
    assert log.replayed is True
    assert Communication.objects.count() == 1


# --- unsubscribe ---


def test_the_unsubscribe_link_works_once_and_twice_is_harmless(email, audience):
    contact = audience["ok1"]
    url = f"/unsubscribe/{unsubscribe_token(contact_id=contact.pk, email_id=email.pk)}/"
    client = Client()

    # GET only asks (link scanners must not unsubscribe anyone)
    page = client.get(url)
    assert page.status_code == 200
    assert b'id="unsubscribe-form"' in page.content
    assert b"o***@example.com" in page.content
    contact.refresh_from_db()
    assert contact.unsubscribed is False

    # POST unsubscribes, and logs it; the marketing status is a separate fact
    done = client.post(url)
    assert done.status_code == 200
    contact.refresh_from_db()
    assert (contact.unsubscribed, contact.marketing_status) == (True, "marketing")
    assert list(Unsubscription.objects.values_list("contact_id", "email_id")) == [
        (contact.pk, email.pk)
    ]

    # Twice: harmless
    again = client.post(url)
    assert again.status_code == 200
    assert b"already unsubscribed" in again.content
    assert Unsubscription.objects.count() == 1


@pytest.mark.parametrize("forge", ["tampered", "other_salt", "swapped_payload", "no_contact"])
def test_a_forged_unsubscribe_token_changes_nothing(email, audience, forge):
    victim, attacker = audience["ok2"], audience["ok1"]
    genuine = unsubscribe_token(contact_id=attacker.pk, email_id=email.pk)
    if forge == "tampered":
        token = ("A" if genuine[0] != "A" else "B") + genuine[1:]
    elif forge == "other_salt":
        token = signing.Signer(salt="something.else").sign_object({"c": victim.pk, "e": email.pk})
    elif forge == "swapped_payload":
        victims = unsubscribe_token(contact_id=victim.pk, email_id=email.pk)
        token = victims.split(":")[0] + ":" + genuine.split(":", 1)[1]
    else:
        token = unsubscribe_token(contact_id=999_999, email_id=email.pk)
    client = Client()

    assert client.get(f"/unsubscribe/{token}/").status_code == 400
    response = client.post(f"/unsubscribe/{token}/")

    assert response.status_code == 400
    assert b"not valid" in response.content
    assert list(
        Contact.objects.filter(unsubscribed=True).order_by("email").values_list("email", flat=True)
    ) == [
        "non-unsub@example.com",
        "unsub-bounced@example.com",
    ]
    assert not Unsubscription.objects.exists()


def test_a_draft_a_workflow_sent_cannot_be_deleted(email):
    from contacts.outreach.services import marketing_email_delete

    marketing_email_send(email=email, contacts=Contact.objects.all())

    with pytest.raises(SendRefused):
        marketing_email_delete(email=email)
    assert MarketingEmail.objects.filter(pk=email.pk).exists()
