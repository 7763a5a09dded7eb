"""Managing forms, chatflows, connected apps and ad accounts through the API: their services,
the admin's permissions, the marketing cost preview (writes nothing) and tokens shown once."""

import hashlib

import pytest
import time_machine
from django.core.cache import cache
from rest_framework.test import APIClient

from contacts.intake.models import AdAccount, Chatflow, ConnectedApp, Form
from contacts.intake.services import form_submit
from contacts.models import Contact
from contacts.status.models import StatusChange
from tests.conftest import at
from tests.factories import ContactFactory, UserFactory

NOW = at(2026, 11, 16, 12)


@pytest.fixture(autouse=True)
def _clock_and_throttle(account):
    cache.clear()
    with time_machine.travel(NOW, tick=False):
        yield
    cache.clear()


def client_of(*groups, **flags):
    client = APIClient()
    client.force_authenticate(UserFactory(groups=list(groups), **flags))
    return client


@pytest.fixture
def ops():
    return client_of("Marketing ops")


def sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Forms


def test_a_form_made_through_the_api_gets_its_source_and_follows_the_account(ops):
    response = ops.post(
        "/api/forms/",
        {"name": "Newsletter", "slug": "newsletter", "fields": [{"name": "first_name"}]},
        format="json",
    )

    assert response.status_code == 201, response.content
    form = Form.objects.get()
    assert (form.source.kind, form.source.name, form.source.default_marketing) == (
        "form",
        "Form: Newsletter",
        True,
    )
    body = response.json()
    assert (body["create_as_marketing"], body["creates_marketing"]) == (None, True)
    assert body["fields"] == [{"name": "first_name", "required": False, "label": ""}]
    assert body["hosted_page"] == "/forms/newsletter/"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "A", "slug": "a", "fields": [{"name": "lead_score"}]}, "fields"),
        ({"name": "A", "slug": "not a slug"}, "slug"),
        ({"name": "A", "slug": "a", "create_as_marketing": "yes"}, "create_as_marketing"),
    ],
)
def test_a_bad_form_is_a_400_naming_the_field(ops, body, field):
    response = ops.post("/api/forms/", body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    assert not Form.objects.exists()


def test_a_form_field_the_form_may_not_ask_is_explained(ops):
    response = ops.post(
        "/api/forms/", {"name": "A", "slug": "a", "fields": ["lead_score"]}, format="json"
    )

    assert "not a contact field a form may ask" in str(response.json()["fields"])


def test_switching_a_form_off_marketing_keeps_its_source_in_step(ops):
    form_id = ops.post("/api/forms/", {"name": "N", "slug": "n"}, format="json").json()["id"]

    response = ops.patch(f"/api/forms/{form_id}/", {"create_as_marketing": False}, format="json")

    assert response.status_code == 200
    assert response.json()["creates_marketing"] is False
    assert Form.objects.get().source.default_marketing is False


def test_a_form_with_submissions_cannot_be_deleted(ops, superuser):
    form_id = ops.post("/api/forms/", {"name": "N", "slug": "n"}, format="json").json()["id"]
    form_submit(form=Form.objects.get(), data={"email": "v@example.com"})
    root = APIClient()
    root.force_authenticate(superuser)

    assert ops.delete(f"/api/forms/{form_id}/").status_code == 403  # as in the admin
    response = root.delete(f"/api/forms/{form_id}/")

    assert response.status_code == 409
    assert "has submissions" in response.json()["detail"]
    assert Form.objects.exists()


# Chatflows and the cost preview


def test_switching_a_chatflow_to_marketing_through_its_service(ops):
    chatflow_id = ops.post("/api/chatflows/", {"name": "Pricing bot"}, format="json").json()["id"]

    response = ops.patch(f"/api/chatflows/{chatflow_id}/", {"marketing": True}, format="json")

    assert response.status_code == 200
    chatflow = Chatflow.objects.get()
    assert (chatflow.marketing, chatflow.source.kind, chatflow.source.default_marketing) == (
        True,
        "chatflow",
        True,
    )


def test_the_marketing_preview_prices_the_channel_and_writes_nothing(ops):
    chatflow_id = ops.post("/api/chatflows/", {"name": "Pricing bot"}, format="json").json()["id"]
    chatflow = Chatflow.objects.get()
    for n in range(30):  # 30 contacts in the last 30 days: one a day
        ContactFactory(email=f"chat{n}@example.com", source=chatflow.source)
    before = (
        Contact.objects.filter(marketing_status="marketing").count(),
        StatusChange.objects.count(),
    )

    response = ops.get(f"/api/chatflows/{chatflow_id}/marketing-preview/")

    assert response.status_code == 200, response.content
    body = response.json()
    # From 16 November 12:00 to 1 December: 14.5 days at one a day.
    assert (body["marketing"], body["created_recently"], body["expected_new"]) == (False, 30, 15)
    assert body["period_end"] == "2026-12-01T00:00:00Z"
    assert body["cost"]["currency"] == "USD"
    assert body["cost"]["peak_after"] - body["cost"]["peak_before"] == 15
    after = (
        Contact.objects.filter(marketing_status="marketing").count(),
        StatusChange.objects.count(),
    )
    assert after == before
    assert Chatflow.objects.get().marketing is False


def test_auditors_read_channels_and_change_none(ops):
    ops.post("/api/chatflows/", {"name": "Bot"}, format="json")
    auditor = client_of("Auditor")
    chatflow_id = Chatflow.objects.get().pk

    assert auditor.get("/api/chatflows/").status_code == 200
    assert auditor.get(f"/api/chatflows/{chatflow_id}/marketing-preview/").status_code == 200
    assert auditor.post("/api/chatflows/", {"name": "Other"}, format="json").status_code == 403
    assert (
        auditor.patch(
            f"/api/chatflows/{chatflow_id}/", {"marketing": True}, format="json"
        ).status_code
        == 403
    )
    assert client_of("Sales").get("/api/chatflows/").status_code == 403
    assert Chatflow.objects.get().marketing is False


# Connected apps and ad accounts: tokens


def test_a_connected_app_token_is_shown_once_and_stored_hashed(ops):
    response = ops.post("/api/connected-apps/", {"name": "Shop"}, format="json")

    assert response.status_code == 201, response.content
    token = response.json()["token"]
    app = ConnectedApp.objects.get()
    assert app.token_hash == sha256(token)
    assert token not in str(ConnectedApp.objects.values().get())
    assert "token" not in ops.get(f"/api/connected-apps/{app.pk}/").json()
    assert token not in ops.get("/api/connected-apps/").content.decode()

    intake = APIClient()
    intake.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    answer = intake.post(
        f"/api/intake/integrations/{app.pk}/contacts/",
        {"contacts": [{"email": "buyer@example.com"}]},
        format="json",
    )
    assert answer.status_code == 200


def test_rotating_a_token_stops_the_old_one(ops):
    first = ops.post("/api/connected-apps/", {"name": "Shop"}, format="json").json()
    app_id = first["id"]

    response = ops.post(f"/api/connected-apps/{app_id}/token/")

    assert response.status_code == 200
    second = response.json()["token"]
    assert second != first["token"]
    assert ConnectedApp.objects.get().token_hash == sha256(second)
    assert response.json()["token_hint"] == second[:12]
    old = APIClient()
    old.credentials(HTTP_AUTHORIZATION=f"Bearer {first['token']}")
    url = f"/api/intake/integrations/{app_id}/contacts/"
    assert (
        old.post(url, {"contacts": [{"email": "x@example.com"}]}, format="json").status_code == 401
    )


def test_only_those_who_may_change_an_app_rotate_its_token(ops):
    app_id = ops.post("/api/connected-apps/", {"name": "Shop"}, format="json").json()["id"]
    stored = ConnectedApp.objects.get().token_hash

    assert client_of("Auditor").post(f"/api/connected-apps/{app_id}/token/").status_code == 403
    assert ConnectedApp.objects.get().token_hash == stored


def test_switching_an_app_on_records_when_and_off_clears_it(ops):
    app_id = ops.post("/api/connected-apps/", {"name": "Shop"}, format="json").json()["id"]

    on = ops.patch(f"/api/connected-apps/{app_id}/", {"marketing": True}, format="json")

    assert on.status_code == 200, on.content
    assert on.json()["marketing_enabled_at"] == "2026-11-16T12:00:00Z"
    assert ConnectedApp.objects.get().source.default_marketing is True
    off = ops.patch(f"/api/connected-apps/{app_id}/", {"marketing": False}, format="json")
    assert off.json()["marketing_enabled_at"] is None


def test_an_app_name_in_use_is_a_400(ops):
    ops.post("/api/connected-apps/", {"name": "Shop"}, format="json")

    response = ops.post("/api/connected-apps/", {"name": "Shop"}, format="json")

    assert response.status_code == 400
    assert "name" in response.json()
    assert ConnectedApp.objects.count() == 1


def test_an_ad_account_made_inactive_with_its_token(ops):
    response = ops.post(
        "/api/ad-accounts/",
        {"name": "Meta", "platform": "facebook", "is_active": False},
        format="json",
    )

    assert response.status_code == 201, response.content
    account = AdAccount.objects.get()
    assert account.token_hash == sha256(response.json()["token"])
    assert (account.is_active, account.marketing, account.source.kind) == (False, True, "ads")
    assert response.json()["leads_url"] == f"/api/intake/ads/{account.pk}/leads/"


def test_an_unknown_ad_platform_is_a_400(ops):
    response = ops.post("/api/ad-accounts/", {"name": "X", "platform": "myspace"}, format="json")

    assert response.status_code == 400
    assert "platform" in response.json()
    assert not AdAccount.objects.exists()
