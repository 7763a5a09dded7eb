"""The communications admin: preview & send, ad audience actions, the communication log."""

import pytest
from django.contrib.admin import helpers
from django.core import mail

from contacts.models import Contact
from contacts.outreach.models import (
    AdAudience,
    AdAudienceMembership,
    Communication,
    EmailSend,
    MarketingEmail,
)
from contacts.outreach.services import marketing_email_create
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing
from tests.factories import ContactFactory

pytestmark = pytest.mark.usefixtures("account")

SOURCE = StatusSource("manual", name="test")


@pytest.fixture
def leads():
    ok = ContactFactory(email="ok@example.com")
    unsub = ContactFactory(email="unsub@example.com", unsubscribed=True)
    non = ContactFactory(email="non@example.com")
    contacts_set_marketing(contacts=[ok.pk, unsub.pk], source=SOURCE)
    return {"ok": ok, "unsub": unsub, "non": non}


@pytest.fixture
def email(leads):
    return marketing_email_create(
        name="Launch",
        subject="We launched",
        body="Hi. {unsubscribe_url}",
        audience_filter={"lifecycle_stage": "lead"},
    )


def send_url(email):
    return f"/admin/contacts/marketingemail/{email.pk}/send/"


def test_preview_and_send(ops_client, email, django_capture_on_commit_callbacks):
    page = ops_client.get(send_url(email))
    assert page.status_code == 200
    text = page.content.decode()
    assert '<tr id="breakdown-audience"><th scope="row">Audience</th><td>3</td></tr>' in text
    assert "<td><strong>1</strong></td>" in text  # will receive
    assert (
        '<tr class="sub" id="breakdown-non-marketing"><th scope="row">non-marketing</th><td>1</td></tr>'
        in text
    )
    assert (
        '<tr class="sub" id="breakdown-unsubscribed"><th scope="row">unsubscribed (marketing)</th><td>1</td></tr>'
        in text
    )
    assert 'id="send-form"' in text
    assert mail.outbox == []

    with django_capture_on_commit_callbacks(execute=True):
        response = ops_client.post(send_url(email))

    assert response.status_code == 302
    assert [m.to for m in mail.outbox] == [["ok@example.com"]]
    email.refresh_from_db()
    assert (email.status, email.sent_count) == ("sent", 1)
    # the page of a sent email offers no second send
    assert 'id="send-form"' not in ops_client.get(send_url(email)).content.decode()


def test_the_change_form_links_to_preview_and_send(ops_client, email):
    page = ops_client.get(f"/admin/contacts/marketingemail/{email.pk}/change/")
    assert f'href="{send_url(email)}" id="preview-send-link"' in page.content.decode()


def test_auditor_sees_the_breakdown_but_cannot_send(auditor_client, email):
    page = auditor_client.get(send_url(email))
    assert page.status_code == 200
    assert 'id="send-form"' not in page.content.decode()

    assert auditor_client.post(send_url(email)).status_code == 403
    assert mail.outbox == []
    assert not EmailSend.objects.exists()
    email.refresh_from_db()
    assert email.status == "draft"


def test_sales_cannot_open_or_send(sales_client, email):
    assert sales_client.get(send_url(email)).status_code == 403
    assert sales_client.post(send_url(email)).status_code == 403
    assert mail.outbox == []


def test_create_a_draft_in_the_admin(ops_client, leads):
    response = ops_client.post(
        "/admin/contacts/marketingemail/add/",
        {
            "name": "News",
            "subject": "News",
            "body": "Hello {unsubscribe_url}",
            "from_email": "",
            "audience_filter": '{"marketing_status": "marketing"}',
            "audience_list": "",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    email = MarketingEmail.objects.get()
    assert (email.audience_filter, email.status) == ({"marketing_status": "marketing"}, "draft")


def test_add_to_ad_audience_shows_the_breakdown_then_adds(ops_client, leads):
    audience = AdAudience.objects.create(name="Retargeting", platform="linkedin")
    selected = [c.pk for c in leads.values()]
    base = {"action": "add_to_ad_audience_action", helpers.ACTION_CHECKBOX_NAME: selected}

    choose = ops_client.post("/admin/contacts/contact/", base)
    assert choose.status_code == 200
    assert 'id="ad-audience-form"' in choose.content.decode()

    preview = ops_client.post("/admin/contacts/contact/", {**base, "audience": audience.pk})
    text = preview.content.decode()
    assert '<tr id="preview-added"><th scope="row">Will be added</th><td>2</td></tr>' in text
    assert (
        '<tr id="preview-refused"><th scope="row">Refused: non-marketing</th><td>1</td></tr>'
        in text
    )
    assert not AdAudienceMembership.objects.exists()

    done = ops_client.post(
        "/admin/contacts/contact/", {**base, "audience": audience.pk, "post": "yes"}, follow=True
    )
    assert (
        "Added 2 to “Retargeting”; 0 were already members. 1 non-marketing" in done.content.decode()
    )
    assert sorted(audience.members.values_list("email", flat=True)) == [
        "ok@example.com",
        "unsub@example.com",
    ]


def test_remove_from_ad_audience(ops_client, leads):
    audience = AdAudience.objects.create(name="Retargeting", platform="linkedin")
    AdAudienceMembership.objects.create(
        audience=audience, contact=leads["ok"], added_at="2026-01-01T00:00Z"
    )
    base = {
        "action": "remove_from_ad_audience_action",
        helpers.ACTION_CHECKBOX_NAME: [leads["ok"].pk, leads["non"].pk],
        "audience": audience.pk,
    }
    preview = ops_client.post("/admin/contacts/contact/", base).content.decode()
    assert '<tr id="preview-removed"><th scope="row">Will be removed</th><td>1</td></tr>' in preview
    ops_client.post("/admin/contacts/contact/", {**base, "post": "yes"})
    assert not AdAudienceMembership.objects.exists()


def test_sales_has_no_audience_actions(sales_client, leads):
    audience = AdAudience.objects.create(name="Retargeting", platform="linkedin")
    page = sales_client.get("/admin/contacts/contact/").content.decode()
    assert "add_to_ad_audience_action" not in page
    sales_client.post(
        "/admin/contacts/contact/",
        {
            "action": "add_to_ad_audience_action",
            helpers.ACTION_CHECKBOX_NAME: [leads["ok"].pk],
            "audience": audience.pk,
            "post": "yes",
        },
    )
    assert not AdAudienceMembership.objects.exists()


def test_members_filter_on_the_contacts_list(ops_client, leads):
    audience = AdAudience.objects.create(name="Retargeting", platform="linkedin")
    AdAudienceMembership.objects.create(
        audience=audience, contact=leads["ok"], added_at="2026-01-01T00:00Z"
    )
    page = ops_client.get("/admin/contacts/contact/", {"ad_audience": audience.pk})
    assert [c.email for c in page.context["cl"].result_list] == ["ok@example.com"]
    listing = ops_client.get("/admin/contacts/adaudience/").content.decode()
    assert f'?ad_audience={audience.pk}">1 members</a>' in listing


def test_sales_sends_a_communication_from_the_admin(sales_client, sales, leads):
    response = sales_client.post(
        "/admin/contacts/communication/add/",
        {
            "contact": leads["non"].pk,
            "type": "sales_email",
            "subject": "Following up",
            "body": "Shall we talk?",
        },
    )
    assert response.status_code == 302
    assert [m.to for m in mail.outbox] == [["non@example.com"]]
    log = Communication.objects.get()
    assert (log.type, log.status, log.actor) == ("sales_email", "sent", sales)
    # the log is read-only
    assert sales_client.get(f"/admin/contacts/communication/{log.pk}/change/").status_code == 200
    assert sales_client.post(f"/admin/contacts/communication/{log.pk}/delete/").status_code == 403
    assert Contact.objects.count() == 3


def test_a_bad_audience_filter_is_a_form_error(ops_client):
    response = ops_client.post(
        "/admin/contacts/marketingemail/add/",
        {
            "name": "News",
            "subject": "News",
            "body": "Hello {unsubscribe_url}",
            "audience_filter": '{"lifecycle_stage": "nope"}',
        },
    )
    assert response.status_code == 200
    assert "lifecycle_stage:" in str(response.context["adminform"].form.errors["audience_filter"])
    assert not MarketingEmail.objects.exists()


def test_a_sent_email_is_read_only_and_cannot_be_deleted(
    ops_client, email, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        ops_client.post(send_url(email))
    change = f"/admin/contacts/marketingemail/{email.pk}/change/"
    page = ops_client.get(change)
    assert page.status_code == 200
    assert page.context["has_change_permission"] is False
    assert ops_client.post(change, {"name": "x"}).status_code == 403
    assert ops_client.post(f"/admin/contacts/marketingemail/{email.pk}/delete/").status_code == 403
    assert MarketingEmail.objects.get().name == "Launch"
