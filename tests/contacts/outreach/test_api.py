"""The communications API: marketing emails (preview, send), ad audiences, lists,
non-marketing communications, and who may do what."""

import pytest
from django.core import mail
from rest_framework.test import APIClient

from contacts.outreach.models import (
    AdAudience,
    AdAudienceMembership,
    Communication,
    ContactList,
    EmailSend,
    MarketingEmail,
)
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing
from tests.factories import ContactFactory, UserFactory

pytestmark = pytest.mark.usefixtures("account")

SOURCE = StatusSource("manual", name="test")
EMAILS = "/api/marketing-emails/"
BODY = "Hi {first_name}. Unsubscribe: {unsubscribe_url}"


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def ops(marketing_ops):
    return client_for(marketing_ops)


@pytest.fixture
def sales_api(sales):
    return client_for(sales)


@pytest.fixture
def leads():
    ok = ContactFactory(email="ok@example.com", first_name="Ann")
    unsub = ContactFactory(email="unsub@example.com", unsubscribed=True)
    bounced = ContactFactory(email="bounced@example.com", hard_bounced=True)
    non = ContactFactory(email="non@example.com")
    contacts_set_marketing(contacts=[ok.pk, unsub.pk, bounced.pk], source=SOURCE)
    return {"ok": ok, "unsub": unsub, "bounced": bounced, "non": non}


def create_email(client, **fields):
    data = {
        "name": "Launch",
        "subject": "We launched",
        "body": BODY,
        "audience_filter": {"lifecycle_stage": "lead"},
        **fields,
    }
    return client.post(EMAILS, data, format="json")


def test_create_preview_send_and_send_again(ops, leads, django_capture_on_commit_callbacks):
    created = create_email(ops)
    assert created.status_code == 201, created.json()
    email_id = created.json()["id"]
    assert created.json()["status"] == "draft"

    preview = ops.get(f"{EMAILS}{email_id}/preview/")
    assert preview.json() == {
        "audience": 4,
        "will_receive": 1,
        "excluded": 3,
        "excluded_non_marketing": 1,
        "excluded_unsubscribed": 1,
        "excluded_bounced": 1,
        "unsubscribed_any": 1,
        "bounced_any": 1,
        "already_sent": 0,
    }
    assert mail.outbox == []

    with django_capture_on_commit_callbacks(execute=True):  # the task runs after commit
        sent = ops.post(f"{EMAILS}{email_id}/send/")
    assert sent.status_code == 202
    assert sent.json()["status"] == "sending"  # the task runs once the request commits
    assert sent.json()["breakdown"]["will_receive"] == 1
    assert MarketingEmail.objects.get(pk=email_id).sent_count == 1
    assert [m.to for m in mail.outbox] == [["ok@example.com"]]

    with django_capture_on_commit_callbacks(execute=True):
        again = ops.post(f"{EMAILS}{email_id}/send/")
    assert again.status_code == 409
    assert "already sent" in again.json()["detail"]
    assert len(mail.outbox) == 1
    assert EmailSend.objects.count() == 1


def test_a_sent_email_cannot_change_or_be_deleted(ops, leads):
    email_id = create_email(ops).json()["id"]
    ops.post(f"{EMAILS}{email_id}/send/")  # "sending" (the task waits for the commit)

    assert ops.patch(f"{EMAILS}{email_id}/", {"subject": "x"}, format="json").status_code == 409
    assert ops.delete(f"{EMAILS}{email_id}/").status_code == 409
    assert MarketingEmail.objects.get(pk=email_id).subject == "We launched"


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"body": "no link"}, "body"),
        ({"audience_filter": {"colour": "red"}}, "audience_filter"),
        ({"audience_filter": {}}, "audience_filter"),
    ],
)
def test_create_refuses_bad_input(ops, fields, field):
    response = create_email(ops, **fields)
    assert response.status_code == 400
    assert field in response.json()
    assert not MarketingEmail.objects.exists()


def test_filter_and_list_together_are_refused(ops):
    newsletter = ContactList.objects.create(name="Newsletter")
    response = create_email(ops, audience_list=newsletter.pk)
    assert response.status_code == 400
    assert "audience_list" in response.json()


def test_a_list_audience(ops, leads):
    newsletter = ContactList.objects.create(name="Newsletter")
    added = ops.post(
        f"/api/contact-lists/{newsletter.pk}/members/",
        {"ids": [leads["ok"].pk, leads["non"].pk]},
        format="json",
    )
    assert added.json()["added"] == 2
    email_id = create_email(ops, audience_filter={}, audience_list=newsletter.pk).json()["id"]

    preview = ops.get(f"{EMAILS}{email_id}/preview/").json()

    assert (preview["audience"], preview["will_receive"], preview["excluded_non_marketing"]) == (
        2,
        1,
        1,
    )


def test_sales_cannot_send_marketing_email(ops, sales_api, leads):
    email_id = create_email(ops).json()["id"]

    response = sales_api.post(f"{EMAILS}{email_id}/send/")

    assert response.status_code == 403
    assert mail.outbox == []
    assert not EmailSend.objects.exists()
    assert MarketingEmail.objects.get(pk=email_id).status == "draft"
    assert sales_api.post(EMAILS, {"name": "x"}, format="json").status_code == 403


def test_sales_sends_a_transactional_email_to_anyone(sales_api, sales, leads):
    response = sales_api.post(
        "/api/communications/",
        {
            "contact": leads["unsub"].pk,
            "type": "ticket_reply",
            "subject": "Re: your ticket",
            "body": "Fixed.",
        },
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["status"] == "sent"
    assert [m.to for m in mail.outbox] == [["unsub@example.com"]]
    log = Communication.objects.get()
    assert (log.type, log.actor, log.contact_id) == ("ticket_reply", sales, leads["unsub"].pk)


def test_communications_refuse_marketing(sales_api, leads):
    response = sales_api.post(
        "/api/communications/",
        {"contact": leads["ok"].pk, "type": "marketing", "subject": "Sale", "body": "Buy"},
        format="json",
    )
    assert response.status_code == 400
    assert "marketing email" in response.json()["type"][0].lower()
    assert mail.outbox == []
    assert not Communication.objects.exists()


def test_a_retried_communication_sends_once(sales_api, leads):
    data = {"contact": leads["ok"].pk, "type": "transactional", "subject": "Receipt", "body": "."}
    first = sales_api.post("/api/communications/", data, format="json", HTTP_IDEMPOTENCY_KEY="r1")
    second = sales_api.post("/api/communications/", data, format="json", HTTP_IDEMPOTENCY_KEY="r1")
    assert (first.status_code, second.status_code) == (201, 200)
    assert second["Idempotent-Replayed"] == "true"
    assert second.json()["id"] == first.json()["id"]
    assert len(mail.outbox) == 1


def test_ad_audience_members_by_ids_and_filter(ops, leads):
    audience = AdAudience.objects.create(name="Lookalike", platform="google")
    url = f"/api/ad-audiences/{audience.pk}/members/"

    preview = ops.post(url, {"filter": {"lifecycle_stage": "lead"}, "preview": True}, format="json")
    assert preview.json() == {
        "operation": "add",
        "preview": True,
        "matched": 4,
        "added": 3,
        "already_member": 0,
        "refused_non_marketing": 1,
        "removed": 0,
        "not_member": 0,
    }
    assert not AdAudienceMembership.objects.exists()

    added = ops.post(url, {"filter": {"lifecycle_stage": "lead"}}, format="json").json()
    assert (added["added"], added["refused_non_marketing"]) == (3, 1)

    removed = ops.post(
        f"{url}remove/", {"ids": [leads["ok"].pk, leads["non"].pk]}, format="json"
    ).json()
    assert (removed["removed"], removed["not_member"]) == (1, 1)
    assert AdAudienceMembership.objects.count() == 2


def test_ad_audience_members_refuses_bad_input_and_sales(ops, sales_api, leads):
    audience = AdAudience.objects.create(name="Lookalike", platform="google")
    url = f"/api/ad-audiences/{audience.pk}/members/"
    assert ops.post(url, {}, format="json").status_code == 400
    assert ops.post(url, {"filter": {}}, format="json").status_code == 400
    assert sales_api.post(url, {"ids": [leads["ok"].pk]}, format="json").status_code == 403
    assert not AdAudienceMembership.objects.exists()


def test_auditor_reads_but_cannot_send(leads, ops):
    auditor = client_for(UserFactory(username="auditor", groups=["Auditor"]))
    email_id = create_email(ops).json()["id"]
    assert auditor.get(f"{EMAILS}{email_id}/preview/").status_code == 200
    assert auditor.get("/api/communications/").status_code == 200
    assert auditor.post(f"{EMAILS}{email_id}/send/").status_code == 403
    assert mail.outbox == []
