"""Chatflows, connected apps (token, toggle timing, batch upsert) and ads leads (DESIGN §1.3)."""

import json

import pytest
import time_machine
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from contacts.engagement.models import EngagementEvent
from contacts.intake.models import (
    AdLead,
    Chatflow,
    ConnectedApp,
)
from contacts.intake.services import (
    INTAKE_BATCH_MAX,
    ad_account_create,
    ad_lead_receive,
    chatflow_intake,
    chatflow_save,
    connected_app_contacts_upsert,
    connected_app_create,
    connected_app_set_marketing,
    intake_token_issue,
)
from contacts.models import (
    Contact,
    SourceKind,
)
from contacts.services import contact_create
from contacts.status.models import StatusChange
from contacts.status.services import contacts_set_marketing
from tests.conftest import at
from tests.factories import SourceFactory, set_guardrails

M, N = "marketing", "non_marketing"


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    cache.clear()
    yield
    cache.clear()


def ledger_rows():
    return list(
        StatusChange.objects.order_by("id").values_list(
            "contact__email", "action", "source_type", "source_id", "source_name"
        )
    )


def statuses():
    return dict(Contact.objects.values_list("email", "marketing_status"))


def reasons():
    return {
        c.email: (c.marketing_reason_type, c.marketing_reason_id, c.marketing_reason_name)
        for c in Contact.objects.all()
    }


def existing_contact(email="known@example.com", **fields):
    manual = SourceFactory(name="Manual", kind=SourceKind.MANUAL)
    return contact_create(email=email, source=manual, **fields)


def bearer(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


# --- chatflows --------------------------------------------------------------------------


def make_chatflow(**fields):
    return chatflow_save(chatflow=Chatflow(name=fields.pop("name", "Pricing bot"), **fields))


def test_a_chatflow_creates_non_marketing_contacts_by_default(account):
    chatflow = make_chatflow()

    response = APIClient().post(
        f"/api/intake/chatflows/{chatflow.pk}/",
        {"email": "Visitor@Example.com", "first_name": "Vi", "conversation_id": "c-1"},
        format="json",
    )

    assert response.status_code == 201
    contact = Contact.objects.get()
    assert (contact.email, contact.marketing_status, contact.source.kind) == (
        "visitor@example.com",
        N,
        "chatflow",
    )
    assert (contact.marketing_reason_type, contact.marketing_reason_id) == (
        "chatflow",
        str(chatflow.pk),
    )
    event = EngagementEvent.objects.get()
    assert (event.type, event.external_id) == ("chat", f"chat:{chatflow.pk}:c-1")
    assert StatusChange.objects.count() == 0


def test_a_marketing_chatflow_creates_marketing_contacts_but_never_upgrades(account):
    known = existing_contact()
    chatflow = make_chatflow(marketing=True)

    chatflow_intake(chatflow=chatflow, data={"email": "new@example.com"})
    chatflow_intake(chatflow=chatflow, data={"email": known.email, "company": "Acme"})

    known.refresh_from_db()
    assert statuses() == {"new@example.com": M, "known@example.com": N}
    assert known.company == "Acme"
    assert ledger_rows() == [
        ("new@example.com", "upgrade", "chatflow", str(chatflow.pk), "Pricing bot")
    ]
    assert chatflow.source.default_marketing is True


def test_the_same_conversation_again_changes_nothing(account):
    chatflow = make_chatflow()

    first = chatflow_intake(
        chatflow=chatflow, data={"email": "a@example.com", "first_name": "A"}, conversation_id="c"
    )
    again = chatflow_intake(
        chatflow=chatflow, data={"email": "a@example.com", "first_name": "B"}, conversation_id="c"
    )

    assert (first.created, again) == (True, None)
    assert Contact.objects.get().first_name == "A"
    assert EngagementEvent.objects.count() == 1


def test_an_unknown_or_inactive_chatflow_is_404_and_errors_are_per_field(account):
    chatflow = make_chatflow()
    inactive = make_chatflow(name="Old", is_active=False)
    client = APIClient()

    missing = client.post("/api/intake/chatflows/999/", {"email": "a@example.com"}, format="json")
    off = client.post(
        f"/api/intake/chatflows/{inactive.pk}/", {"email": "a@example.com"}, format="json"
    )
    bad = client.post(f"/api/intake/chatflows/{chatflow.pk}/", {"email": "x"}, format="json")

    assert (missing.status_code, off.status_code, bad.status_code) == (404, 404, 400)
    assert bad.data == {"email": ["Enter a valid email address."]}
    assert Contact.objects.count() == 0


# --- connected apps: token and toggle ---------------------------------------------------


def test_an_app_token_is_stored_only_as_a_hash(account):
    app, token = connected_app_create(name="Shop")

    assert token.startswith("mk_app_") and len(token) > 40
    assert token not in (app.token_hash, app.token_hint)
    assert app.token_hint == token[:12]
    assert (app.source.kind, app.source.name, app.marketing) == ("integration", "App: Shop", False)


def test_switching_marketing_on_records_when_and_off_clears_it(account):
    app, _ = connected_app_create(name="Shop")

    with time_machine.travel(at(2026, 3, 5, 10), tick=False):
        connected_app_set_marketing(app=app, marketing=True)
    app.refresh_from_db()
    since = app.marketing_enabled_at
    with time_machine.travel(at(2026, 3, 6), tick=False):
        connected_app_set_marketing(app=app, marketing=True)  # already on: the time stays
    app.refresh_from_db()
    assert (app.marketing, app.marketing_enabled_at, since) == (True, since, at(2026, 3, 5, 10))

    connected_app_set_marketing(app=app, marketing=False)
    app.refresh_from_db()
    assert (app.marketing, app.marketing_enabled_at) == (False, None)


def test_the_app_setting_applies_only_to_contacts_created_after_it_was_switched_on(account):
    app, _ = connected_app_create(name="Shop")
    connected_app_contacts_upsert(app=app, items=[{"email": "before@example.com"}])

    connected_app_set_marketing(app=app, marketing=True)
    after = connected_app_contacts_upsert(
        app=app,
        items=[{"email": "before@example.com", "company": "B"}, {"email": "after@example.com"}],
    )
    connected_app_set_marketing(app=app, marketing=False)
    connected_app_contacts_upsert(app=app, items=[{"email": "off@example.com"}])

    assert statuses() == {
        "before@example.com": N,
        "after@example.com": M,
        "off@example.com": N,
    }
    assert [(i.status, i.marketing_status) for i in after.items] == [
        ("updated", N),
        ("created", M),
    ]
    assert ledger_rows() == [("after@example.com", "upgrade", "integration", str(app.pk), "Shop")]
    # Every contact the app created, marketing or not, records the policy's reason: the app.
    app_reason = ("integration", str(app.pk), "Shop")
    assert reasons() == dict.fromkeys(statuses(), app_reason)


# --- connected apps: the batch -----------------------------------------------------------


def contacts_url(app):
    return f"/api/intake/integrations/{app.pk}/contacts/"


def test_the_batch_reports_each_item(account):
    app, token = connected_app_create(name="Shop")
    existing_contact(company="Old")
    unchanged = existing_contact(email="same@example.com", company="Same")

    response = bearer(token).post(
        contacts_url(app),
        {
            "contacts": [
                {"email": "New@Example.com", "first_name": "Nia", "lifecycle_stage": "mql"},
                {"email": "known@example.com", "company": "New", "first_name": ""},
                {"email": "same@example.com", "company": "Same"},
                {"email": "broken"},
                {"email": "new@example.com"},
                {"email": "c@example.com", "lifecycle_stage": "boss", "shoe_size": "9"},
                "not an object",
            ]
        },
        format="json",
    )

    assert response.status_code == 200
    data = response.data
    new_id = Contact.objects.get(email="new@example.com").pk
    known_id = Contact.objects.get(email="known@example.com").pk
    assert [dict(item) for item in data["items"]] == [
        {
            "index": 0,
            "email": "new@example.com",
            "status": "created",
            "id": new_id,
            "marketing_status": N,
            "changed_fields": [],
            "messages": [],
        },
        {
            "index": 1,
            "email": "known@example.com",
            "status": "updated",
            "id": known_id,
            "marketing_status": N,
            "changed_fields": ["company"],
            "messages": [],
        },
        {
            "index": 2,
            "email": "same@example.com",
            "status": "unchanged",
            "id": unchanged.pk,
            "marketing_status": N,
            "changed_fields": [],
            "messages": [],
        },
        {
            "index": 3,
            "email": "broken",
            "status": "error",
            "id": None,
            "marketing_status": None,
            "changed_fields": [],
            "messages": ["email: Enter a valid email address."],
        },
        {
            "index": 4,
            "email": "new@example.com",
            "status": "error",
            "id": None,
            "marketing_status": None,
            "changed_fields": [],
            "messages": ["The same email as item 0 of this batch."],
        },
        {
            "index": 5,
            "email": "c@example.com",
            "status": "error",
            "id": None,
            "marketing_status": None,
            "changed_fields": [],
            "messages": [
                "Unknown fields: shoe_size (allowed: email, first_name, last_name, company, "
                "phone, lifecycle_stage, lead_status, contact_type).",
                "lifecycle_stage: Value 'boss' is not a valid choice.",
            ],
        },
        {
            "index": 6,
            "email": "",
            "status": "error",
            "id": None,
            "marketing_status": None,
            "changed_fields": [],
            "messages": ["Each contact must be an object with at least an email."],
        },
    ]
    assert (data["created"], data["updated"], data["unchanged"], data["errors"]) == (1, 1, 1, 4)
    new = Contact.objects.get(email="new@example.com")
    assert (new.first_name, new.lifecycle_stage, new.source_id) == ("Nia", "mql", app.source_id)
    assert Contact.objects.get(email="known@example.com").company == "New"


def test_a_batch_of_more_than_10000_is_refused_whole(account):
    app, token = connected_app_create(name="Shop")
    items = [{"email": f"p{i}@example.com"} for i in range(INTAKE_BATCH_MAX + 1)]

    response = bearer(token).post(contacts_url(app), {"contacts": items}, format="json")

    assert response.status_code == 400
    assert response.data == {
        "contacts": ["At most 10,000 contacts a request; got 10,001. Split the batch."]
    }
    assert Contact.objects.count() == 0


def test_a_full_batch_is_set_based_and_a_retry_changes_nothing(account):
    # Given a marketing app and 10,000 new contacts
    app, token = connected_app_create(name="Shop", marketing=True)
    items = [
        {
            "email": f"firstname.lastname{i}@example-company.com",
            "first_name": "Firstname",
            "last_name": f"Lastname{i}",
            "company": "Example Company Incorporated Limited",
            "phone": "+1 555 0100 1234",
            "lifecycle_stage": "lead",
            "lead_status": "new",
            "contact_type": "prospect",
        }
        for i in range(INTAKE_BATCH_MAX)
    ]
    # Over 2.5 MB of JSON (Django's form-data cap; DRF reads JSON bodies from the stream)
    assert len(json.dumps({"contacts": items})) > 2.5 * 1024 * 1024

    # When the batch is taken, then taken again
    statements = []
    with connection.execute_wrapper(
        lambda execute, sql, *args: statements.append(sql) or execute(sql, *args)
    ):
        first = connected_app_contacts_upsert(app=app, items=items)
    ledger_after_first = StatusChange.objects.count()
    second = bearer(token).post(contacts_url(app), {"contacts": items}, format="json")

    # Then the first creates them all marketing with statements per chunk, not per contact
    # (SQLite's 999-parameter limit makes its INSERTs ~45 rows each; PostgreSQL's 1,000)
    assert (first.created, first.marketing) == (10_000, 10_000)
    assert 0 < len(statements) < 300
    assert ledger_after_first == 10_000
    # and the retry finds every contact unchanged and writes no ledger row
    assert (second.data["unchanged"], second.data["created"], second.data["updated"]) == (
        10_000,
        0,
        0,
    )
    assert StatusChange.objects.count() == 10_000
    assert Contact.objects.billable(at(2100, 1, 1)).count() == 10_000


def test_an_app_never_downgrades_nor_upgrades_an_existing_contact(account, manual):
    marketing = existing_contact(email="m@example.com")
    contacts_set_marketing(contacts=marketing, source=manual)
    existing_contact(email="n@example.com")
    app, _ = connected_app_create(name="CRM sync", marketing=True)
    off_app, _ = connected_app_create(name="Other")

    connected_app_contacts_upsert(app=off_app, items=[{"email": "m@example.com", "phone": "1"}])
    connected_app_contacts_upsert(app=app, items=[{"email": "n@example.com", "phone": "2"}])

    assert statuses() == {"m@example.com": M, "n@example.com": N}
    assert StatusChange.objects.count() == 1


def test_an_empty_value_does_not_overwrite_a_stored_one(account):
    existing_contact(company="Acme")
    app, _ = connected_app_create(name="Shop")

    result = connected_app_contacts_upsert(
        app=app, items=[{"email": "known@example.com", "company": "", "lead_status": ""}]
    )

    assert result.items[0].status == "unchanged"
    assert Contact.objects.get().company == "Acme"


def test_a_user_token_does_not_work_on_the_app_endpoint(account, marketing_ops):
    app, _ = connected_app_create(name="Shop")
    user_token = Token.objects.create(user=marketing_ops)

    as_bearer = bearer(user_token.key).post(
        contacts_url(app), {"contacts": [{"email": "a@example.com"}]}, format="json"
    )
    as_token = APIClient()
    as_token.credentials(HTTP_AUTHORIZATION=f"Token {user_token.key}")
    with_keyword = as_token.post(
        contacts_url(app), {"contacts": [{"email": "a@example.com"}]}, format="json"
    )
    session = APIClient()
    session.force_login(marketing_ops)
    logged_in = session.post(
        contacts_url(app), {"contacts": [{"email": "a@example.com"}]}, format="json"
    )

    assert (as_bearer.status_code, with_keyword.status_code, logged_in.status_code) == (
        401,
        401,
        401,
    )
    assert Contact.objects.count() == 0


def test_an_app_token_works_only_on_its_own_endpoint(account):
    app, token = connected_app_create(name="Shop")
    other, _ = connected_app_create(name="Other")
    ads, _ = ad_account_create(name="FB", platform="facebook")
    client = bearer(token)

    elsewhere = [
        client.get("/api/contacts/").status_code,
        client.post(
            contacts_url(other), {"contacts": [{"email": "a@example.com"}]}, format="json"
        ).status_code,
        client.post(
            f"/api/intake/ads/{ads.pk}/leads/",
            {"lead_id": "1", "email": "a@example.com"},
            format="json",
        ).status_code,
    ]
    as_token_keyword = APIClient()
    as_token_keyword.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    assert elsewhere == [401, 403, 401]
    assert as_token_keyword.get("/api/contacts/").status_code == 401
    assert Contact.objects.count() == 0


def test_a_regenerated_or_inactive_app_token_stops_working(account):
    app, token = connected_app_create(name="Shop")
    new_token = intake_token_issue(holder=app)

    old = bearer(token).post(
        contacts_url(app), {"contacts": [{"email": "a@example.com"}]}, format="json"
    )
    new = bearer(new_token).post(
        contacts_url(app), {"contacts": [{"email": "a@example.com"}]}, format="json"
    )
    ConnectedApp.objects.filter(pk=app.pk).update(is_active=False)
    off = bearer(new_token).post(
        contacts_url(app), {"contacts": [{"email": "b@example.com"}]}, format="json"
    )

    assert (old.status_code, new.status_code, off.status_code) == (401, 200, 401)
    assert list(Contact.objects.values_list("email", flat=True)) == ["a@example.com"]


def test_app_intake_is_throttled_per_app(account):
    app, token = connected_app_create(name="Shop")
    rates = {"intake": "100/minute", "intake_apps": "2/minute"}

    with override_settings(
        REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    ):
        codes = [
            bearer(token)
            .post(contacts_url(app), {"contacts": [{"email": f"a{i}@example.com"}]}, format="json")
            .status_code
            for i in range(3)
        ]

    assert codes == [200, 200, 429]
    assert Contact.objects.count() == 2


def test_guardrails_hold_an_apps_new_marketing_contacts_which_stay_non_marketing(account):
    from contacts.status.models import PendingApproval

    set_guardrails(operation_limit=1)
    app, _ = connected_app_create(name="Shop", marketing=True)

    result = connected_app_contacts_upsert(
        app=app, items=[{"email": "a@example.com"}, {"email": "b@example.com"}]
    )

    assert (result.created, result.marketing) == (2, 0)
    assert "Waiting for approval" in result.marketing_held
    assert statuses() == {"a@example.com": N, "b@example.com": N}
    # Held, they stay non-marketing and still say why: the app created them.
    assert reasons() == dict.fromkeys(statuses(), ("integration", str(app.pk), "Shop"))
    approval = PendingApproval.objects.get()
    assert (approval.source_type, approval.source_name, approval.new_marketing) == (
        "integration",
        "Shop",
        2,
    )


# --- ads leads ---------------------------------------------------------------------------


def leads_url(ad_account):
    return f"/api/intake/ads/{ad_account.pk}/leads/"


def test_ads_leads_create_marketing_contacts_once_per_lead_id(account):
    ads, token = ad_account_create(name="FB leads", platform="facebook")
    client = bearer(token)
    body = {
        "leads": [
            {
                "lead_id": "L1",
                "email": "a@example.com",
                "first_name": "A",
                "properties": {"ad": "x"},
            },
            {"lead_id": "L2", "email": "b@example.com"},
        ]
    }

    first = client.post(leads_url(ads), body, format="json")
    again = client.post(leads_url(ads), body, format="json")
    single = client.post(leads_url(ads), {"lead_id": "L3", "email": "a@example.com"}, format="json")

    a, b = Contact.objects.get(email="a@example.com"), Contact.objects.get(email="b@example.com")
    assert first.data == {
        "results": [
            {"lead_id": "L1", "status": "created", "contact_id": a.pk},
            {"lead_id": "L2", "status": "created", "contact_id": b.pk},
        ]
    }
    assert [r["status"] for r in again.data["results"]] == ["duplicate", "duplicate"]
    assert single.data["results"] == [{"lead_id": "L3", "status": "updated", "contact_id": a.pk}]
    assert statuses() == {"a@example.com": M, "b@example.com": M}
    assert ledger_rows() == [
        ("a@example.com", "upgrade", "ads", str(ads.pk), "FB leads"),
        ("b@example.com", "upgrade", "ads", str(ads.pk), "FB leads"),
    ]
    assert AdLead.objects.count() == 3
    assert AdLead.objects.get(lead_id="L1").data["properties"] == {"ad": "x"}
    assert EngagementEvent.objects.filter(type="ad_click").count() == 3
    assert a.source.kind == "ads"


def test_an_ad_account_set_to_non_marketing_and_existing_contacts(account):
    known = existing_contact()
    ads, _ = ad_account_create(name="LinkedIn", platform="linkedin", marketing=False)

    ad_lead_receive(ad_account=ads, lead_id="1", data={"email": "new@example.com"})
    ad_lead_receive(ad_account=ads, lead_id="2", data={"email": known.email})

    assert statuses() == {"new@example.com": N, "known@example.com": N}
    assert StatusChange.objects.count() == 0


def test_ads_tokens_are_scoped_and_errors_are_per_field(account):
    ads, token = ad_account_create(name="FB", platform="facebook")
    other, _ = ad_account_create(name="G", platform="google")

    wrong = bearer(token).post(
        leads_url(other), {"lead_id": "1", "email": "a@example.com"}, format="json"
    )
    none = APIClient().post(
        leads_url(ads), {"lead_id": "1", "email": "a@example.com"}, format="json"
    )
    bad = bearer(token).post(leads_url(ads), {"leads": [{"email": "x"}]}, format="json")

    assert (wrong.status_code, none.status_code, bad.status_code) == (403, 401, 400)
    # Errors by the lead's position in the list
    assert bad.data == {
        "leads": {
            0: {"email": ["Enter a valid email address."], "lead_id": ["This field is required."]}
        }
    }
    assert Contact.objects.count() == 0
