"""POST /api/contacts/merge/ and HubSpot's POST /crm/v3/objects/contacts/merge."""

import pytest

from contacts.merge.models import MergedContact
from contacts.models import Contact
from contacts.status.models import StatusChange
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing
from tests.contacts.api.support import client_for
from tests.contacts.hubspot.conftest import bearer_client
from tests.factories import ContactFactory, SourceFactory

URL = "/api/contacts/merge/"
HUBSPOT_URL = "/crm/v3/objects/contacts/merge"


def marketing(contact):
    contacts_set_marketing(contacts=contact, source=StatusSource("manual", name="test"))


@pytest.fixture
def pair(account):
    keep = ContactFactory(email="keep@example.com", first_name="Keep", phone="")
    gone = ContactFactory(email="gone@example.com", first_name="Gone", phone="+44 2")
    marketing(gone)
    return keep, gone


def test_merge_answers_the_survivor(pair, marketing_ops):
    keep, gone = pair
    api = client_for(marketing_ops)

    response = api.post(
        URL,
        {"primary": keep.pk, "secondary": gone.pk, "values": {"first_name": "Gone"}},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["email"], body["first_name"], body["phone"]) == (
        keep.pk,
        "keep@example.com",
        "Gone",
        "+44 2",
    )
    assert body["marketing_status"] == "marketing"
    assert not Contact.objects.filter(pk=gone.pk).exists()

    again = api.post(URL, {"primary": keep.pk, "secondary": gone.pk}, format="json")
    assert again.status_code == 200
    assert again.json()["id"] == keep.pk
    assert again["Idempotent-Replayed"] == "true"
    assert MergedContact.objects.count() == 1


def test_merge_errors(pair, marketing_ops):
    keep, gone = pair
    api = client_for(marketing_ops)

    same = api.post(URL, {"primary": keep.pk, "secondary": keep.pk}, format="json")
    unknown = api.post(URL, {"primary": keep.pk, "secondary": 99999}, format="json")
    bad_field = api.post(
        URL, {"primary": keep.pk, "secondary": gone.pk, "values": {"lead_score": 9}}, format="json"
    )
    bad_value = api.post(
        URL,
        {"primary": keep.pk, "secondary": gone.pk, "values": {"lifecycle_stage": "nope"}},
        format="json",
    )
    missing = api.post(URL, {"primary": keep.pk}, format="json")

    assert same.status_code == 409 and "itself" in same.json()["detail"]
    assert unknown.status_code == 404 and "99999" in unknown.json()["detail"]
    assert bad_field.status_code == 400 and "lead_score" in str(bad_field.json()["values"])
    assert bad_value.status_code == 400 and "lifecycle_stage" in bad_value.json()["values"]
    assert missing.status_code == 400 and "secondary" in missing.json()
    assert Contact.objects.filter(pk=gone.pk).exists()
    assert not MergedContact.objects.exists()


def test_merge_refusals(pair, sales, marketing_ops):
    keep, gone = pair
    rows = StatusChange.objects.count()

    # Sales may not delete contacts.
    denied = client_for(sales).post(URL, {"primary": keep.pk, "secondary": gone.pk}, format="json")
    locked = ContactFactory(email="app@example.com", source=SourceFactory(kind="mobile_app"))
    refused = client_for(marketing_ops).post(
        URL, {"primary": locked.pk, "secondary": gone.pk}, format="json"
    )

    assert denied.status_code == 403
    assert refused.status_code == 400 and "locked source" in refused.json()["values"][0]
    assert Contact.objects.filter(pk=gone.pk).exists()
    assert StatusChange.objects.count() == rows


def test_hubspot_merge(pair, marketing_ops):
    keep, gone = pair
    api = bearer_client(marketing_ops)

    response = api.post(
        HUBSPOT_URL,
        {"primaryObjectId": str(keep.pk), "objectIdToMerge": str(gone.pk)},
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == str(keep.pk)
    assert body["properties"]["email"] == "keep@example.com"
    assert body["properties"]["hs_marketable_status"] == "true"
    assert not Contact.objects.filter(pk=gone.pk).exists()


def test_hubspot_merge_errors(pair, marketing_ops, sales):
    keep, gone = pair
    api = bearer_client(marketing_ops)

    unknown = api.post(
        HUBSPOT_URL, {"primaryObjectId": str(keep.pk), "objectIdToMerge": "424242"}, format="json"
    )
    same = api.post(
        HUBSPOT_URL,
        {"primaryObjectId": str(keep.pk), "objectIdToMerge": str(keep.pk)},
        format="json",
    )
    shapeless = api.post(HUBSPOT_URL, {"primaryObjectId": str(keep.pk)}, format="json")
    denied = bearer_client(sales).post(
        HUBSPOT_URL,
        {"primaryObjectId": str(keep.pk), "objectIdToMerge": str(gone.pk)},
        format="json",
    )

    assert (unknown.status_code, unknown.json()["category"]) == (404, "OBJECT_NOT_FOUND")
    assert (same.status_code, same.json()["category"]) == (400, "VALIDATION_ERROR")
    assert (shapeless.status_code, shapeless.json()["category"]) == (400, "VALIDATION_ERROR")
    assert (denied.status_code, denied.json()["category"]) == (403, "MISSING_SCOPES")
    assert "contacts.delete_contact" in denied.json()["message"]
    assert Contact.objects.filter(pk=gone.pk).exists()
