"""The intake admin: forms, submissions, chatflows, connected apps, ad accounts, account settings."""

import re

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from rest_framework.test import APIClient

from contacts.intake.models import (
    AdAccount,
    Chatflow,
    ConnectedApp,
    Form,
    FormSubmission,
)
from contacts.intake.services import (
    connected_app_create,
    form_save,
    form_submit,
)
from contacts.models import Source
from crm.roles import AUDITOR, MARKETING_OPS
from tests.factories import UserFactory

TOKEN = re.compile(r"<code>(mk_(?:app|ads)_[A-Za-z0-9_\-]+)</code>")


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def ops(account):
    return login(UserFactory(username="ops2", groups=[MARKETING_OPS]))


@pytest.fixture
def auditor(account):
    return login(UserFactory(username="audit2", groups=[AUDITOR]))


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_marketing_ops_adds_a_form_and_the_list_links_its_page_and_submissions(ops):
    response = ops.post(
        "/admin/contacts/form/add/",
        {
            "name": "Webinar",
            "slug": "webinar",
            "fields": '[{"name": "first_name", "required": true}]',
            "consent_label": "",
            "create_as_marketing": "unknown",
            "upgrade_existing": "on",
            "success_message": "See you there",
            "is_active": "on",
        },
    )
    assert response.status_code == 302
    form = Form.objects.get()
    form_submit(form=form, data={"email": "a@example.com", "first_name": "A"})

    listing = ops.get("/admin/contacts/form/").content.decode()

    assert (form.source.kind, form.create_as_marketing) == ("form", None)
    assert (
        '<a href="/forms/webinar/" target="_blank" rel="noopener">View /forms/webinar/</a>'
        in listing
    )
    assert f'<a href="/admin/contacts/formsubmission/?form__id__exact={form.pk}">1</a>' in listing
    assert "Yes (account default)" in listing


def test_a_form_with_bad_fields_is_refused_with_the_reason(ops):
    response = ops.post(
        "/admin/contacts/form/add/",
        {
            "name": "Bad",
            "slug": "bad",
            "fields": '[{"name": "marketing_status"}]',
            "create_as_marketing": "unknown",
            "success_message": "x",
        },
    )

    assert response.status_code == 200
    assert (
        "&#x27;marketing_status&#x27; is not a contact field a form may ask"
        in response.content.decode()
    )
    assert (Form.objects.count(), Source.objects.count()) == (0, 0)


def test_submissions_are_read_only(ops, account):
    form = form_save(form=Form(name="F", slug="f"))
    form_submit(form=form, data={"email": "a@example.com"})
    submission = FormSubmission.objects.get()

    listing = ops.get("/admin/contacts/formsubmission/")
    add = ops.get("/admin/contacts/formsubmission/add/")
    change = ops.post(f"/admin/contacts/formsubmission/{submission.pk}/change/", {"data": "{}"})

    assert listing.status_code == 200
    assert "a@example.com" in listing.content.decode()
    assert add.status_code == 403
    assert change.status_code == 403
    assert FormSubmission.objects.get().data == {"email": "a@example.com"}


def test_adding_a_connected_app_shows_its_token_once_and_the_token_works(ops):
    response = ops.post(
        "/admin/contacts/connectedapp/add/",
        {"name": "Shop", "is_active": "on", "marketing": "on"},
        follow=True,
    )

    shown = [m for m in messages_of(response) if "Copy it now" in m]
    app = ConnectedApp.objects.get()
    token = TOKEN.search(shown[0]).group(1)
    assert len(shown) == 1
    assert (app.marketing, app.marketing_enabled_at is not None) == (True, True)
    assert token not in ops.get(f"/admin/contacts/connectedapp/{app.pk}/change/").content.decode()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    result = api.post(
        f"/api/intake/integrations/{app.pk}/contacts/",
        {"contacts": [{"email": "a@example.com"}]},
        format="json",
    )
    assert (result.status_code, result.data["marketing"]) == (200, 1)


def test_the_marketing_toggle_records_its_time_and_the_list_shows_it(ops):
    app, _ = connected_app_create(name="Shop")
    change = f"/admin/contacts/connectedapp/{app.pk}/change/"

    on = ops.post(change, {"name": "Shop", "is_active": "on", "marketing": "on"})
    app.refresh_from_db()
    since = app.marketing_enabled_at
    listing = ops.get("/admin/contacts/connectedapp/").content.decode()
    off = ops.post(change, {"name": "Shop", "is_active": "on"})
    app.refresh_from_db()

    assert (on.status_code, off.status_code) == (302, 302)
    assert since is not None
    assert f'<td class="field-marketing_since">{since:%Y-%m-%d %H:%M}</td>' in listing
    assert (app.marketing, app.marketing_enabled_at) == (False, None)


def test_regenerating_a_token_shows_the_new_one_and_the_old_one_stops(ops):
    app, old = connected_app_create(name="Shop")

    response = ops.post(
        "/admin/contacts/connectedapp/",
        {"action": "regenerate_token", "_selected_action": [app.pk]},
        follow=True,
    )

    new = TOKEN.search(" ".join(messages_of(response))).group(1)
    assert new != old
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {old}")
    url = f"/api/intake/integrations/{app.pk}/contacts/"
    assert (
        api.post(url, {"contacts": [{"email": "a@example.com"}]}, format="json").status_code == 401
    )
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {new}")
    assert (
        api.post(url, {"contacts": [{"email": "a@example.com"}]}, format="json").status_code == 200
    )


def test_adding_an_ad_account_and_a_chatflow(ops):
    ads = ops.post(
        "/admin/contacts/adaccount/add/",
        {"name": "FB", "platform": "facebook", "marketing": "on", "is_active": "on"},
        follow=True,
    )
    chat = ops.post("/admin/contacts/chatflow/add/", {"name": "Bot", "is_active": "on"})

    assert any("Copy it now" in m for m in messages_of(ads))
    account = AdAccount.objects.get()
    chatflow = Chatflow.objects.get()
    assert (account.source.kind, account.source.default_marketing) == ("ads", True)
    assert chat.status_code == 302
    assert (chatflow.marketing, chatflow.source.kind) == (False, "chatflow")


def test_a_channels_source_default_is_read_only_in_the_source_admin(ops):
    form = form_save(form=Form(name="F", slug="f"))

    page = ops.get(f"/admin/contacts/source/{form.source_id}/change/").content.decode()

    assert 'name="default_marketing"' not in page
    assert 'name="kind"' not in page


def test_the_auditor_views_intake_but_changes_nothing(auditor, account):
    form = form_save(form=Form(name="F", slug="f"))
    app, _ = connected_app_create(name="Shop")
    token_hash = app.token_hash

    pages = [
        auditor.get(url).status_code
        for url in (
            "/admin/contacts/form/",
            "/admin/contacts/formsubmission/",
            "/admin/contacts/chatflow/",
            "/admin/contacts/connectedapp/",
            "/admin/contacts/adaccount/",
        )
    ]
    change = auditor.post(
        f"/admin/contacts/connectedapp/{app.pk}/change/", {"name": "Shop", "marketing": "on"}
    )
    regenerate = auditor.post(
        "/admin/contacts/connectedapp/",
        {"action": "regenerate_token", "_selected_action": [app.pk]},
    )
    add = auditor.get("/admin/contacts/form/add/")

    assert pages == [200] * 5
    assert (change.status_code, add.status_code) == (403, 403)
    assert regenerate.status_code == 200  # no such action for them: the list again
    app.refresh_from_db()
    assert (app.marketing, app.token_hash, form.name) == (False, token_hash, "F")


def test_the_account_admin_shows_the_intake_settings(account):
    client = login(UserFactory(username="root2", is_superuser=True))

    page = client.get(f"/admin/crm/account/{account.pk}/change/").content.decode()

    assert 'name="forms_create_marketing"' in page
    assert 'name="external_forms_marketing"' in page


def test_the_app_page_shows_what_switching_marketing_on_would_cost(ops):
    import time_machine
    from django.utils import timezone

    from billing.models import Subscription
    from contacts.intake.selectors import channel_marketing_forecast
    from contacts.models import Contact
    from tests.conftest import at

    # Given an app that created 3,000 contacts in the last 30 days, with 15 days of the
    # period left, and a tier of 1,000 included contacts in blocks of 5,000 at 225.00
    subscription = Subscription.load()
    subscription.included_contacts, subscription.block_size = 1_000, 5_000
    subscription.base_price, subscription.block_price = 80_000, 22_500
    subscription.save()
    app, _ = connected_app_create(name="Shop")
    with time_machine.travel(at(2026, 11, 16), tick=False):
        Contact.objects.bulk_create(
            Contact(email=f"s{i}@example.com", source=app.source, created_at=timezone.now())
            for i in range(3_000)
        )
        # When the page is read
        forecast = channel_marketing_forecast(source=app.source)
        page = ops.get(f"/admin/contacts/connectedapp/{app.pk}/change/").content.decode()

    # Then: 100 a day for the 15 days left, 1,500 contacts: past the 1,000 included, a block
    assert (forecast.created_recently, forecast.expected_new) == (3_000, 1_500)
    assert forecast.cost["invoice_delta"] == 22_500
    assert "about 1,500 more would become marketing before 1 Dec 2026" in page
    assert "invoice +225.00 USD" in page
