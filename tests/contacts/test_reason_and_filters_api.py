"""What the API shows is inside its schema: a contact without a reason, a draft's sender,
filter objects with typed values."""

import importlib

import pytest
from django.apps import apps
from rest_framework.test import APIClient

from contacts.models import Contact
from contacts.outreach.models import MarketingEmail
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing
from tests.factories import ContactFactory, UserFactory

BODY = "Hello {first_name}. Unsubscribe: {unsubscribe_url}"


@pytest.fixture
def api(account):
    client = APIClient()
    client.force_authenticate(UserFactory(username="root", is_superuser=True))
    return client


def test_a_contact_without_a_reason_shows_a_null_reason_type(api):
    contact = ContactFactory()

    shown = api.get(f"/api/contacts/{contact.pk}/").json()

    assert shown["marketing_reason_type"] is None
    contact.refresh_from_db()
    assert contact.marketing_reason_type is None


def test_a_contact_with_a_reason_shows_its_type(api):
    contact = ContactFactory()
    contacts_set_marketing(contacts=[contact.pk], source=StatusSource("manual", name="t"))

    assert api.get(f"/api/contacts/{contact.pk}/").json()["marketing_reason_type"] == "manual"


def test_the_migration_turns_a_blank_reason_type_into_null(db):
    migration = importlib.import_module("contacts.migrations.0016_contact_reason_type_null")
    blank, with_reason = ContactFactory.create_batch(2)
    Contact.objects.filter(pk=blank.pk).update(marketing_reason_type="")
    Contact.objects.filter(pk=with_reason.pk).update(marketing_reason_type="import")

    migration.blank_to_null(apps, None)

    types = dict(Contact.objects.values_list("pk", "marketing_reason_type"))
    assert types == {blank.pk: None, with_reason.pk: "import"}


def test_a_draft_email_has_a_null_sender(api):
    created = api.post(
        "/api/marketing-emails/",
        {"name": "Launch", "subject": "Hi", "body": BODY, "audience_filter": {"pending": True}},
        format="json",
    )

    assert created.status_code == 201, created.json()
    assert created.json()["sent_by"] is None


def test_an_audience_filter_comes_back_with_its_types(api):
    created = api.post(
        "/api/marketing-emails/",
        {
            "name": "Launch",
            "subject": "Hi",
            "body": BODY,
            "audience_filter": {"pending": False, "lead_score_min": 5, "lifecycle_stage": "lead"},
        },
        format="json",
    ).json()

    assert created["audience_filter"] == {
        "pending": False,
        "lead_score_min": 5,
        "lifecycle_stage": "lead",
    }
    stored = MarketingEmail.objects.get(pk=created["id"]).audience_filter
    assert stored == {"pending": "false", "lead_score_min": "5", "lifecycle_stage": "lead"}


@pytest.mark.parametrize(
    ("contact_filter", "key"),
    [
        ({"pending": "true"}, "pending"),
        ({"lead_score_min": "5"}, "lead_score_min"),
        ({"source": "1"}, "source"),
        ({"lifecycle_stage": 3}, "lifecycle_stage"),
        ({"created_after": True}, "created_after"),
    ],
)
def test_a_filter_value_of_the_wrong_type_is_refused(api, contact_filter, key):
    contact = ContactFactory()

    response = api.post(
        "/api/contacts/marketing-status/",
        {"status": "marketing", "filter": contact_filter},
        format="json",
    )

    assert response.status_code == 400
    assert key in response.json()["filter"]
    contact.refresh_from_db()
    assert contact.marketing_status == "non_marketing"


def test_a_typed_filter_object_works(api):
    lead, customer = (
        ContactFactory(lifecycle_stage="lead"),
        ContactFactory(lifecycle_stage="customer"),
    )

    response = api.post(
        "/api/contacts/marketing-status/",
        {"status": "marketing", "filter": {"lifecycle_stage": "lead", "lead_score_min": 0}},
        format="json",
    )

    assert response.status_code == 200
    statuses = dict(Contact.objects.values_list("pk", "marketing_status"))
    assert statuses == {lead.pk: "marketing", customer.pk: "non_marketing"}
