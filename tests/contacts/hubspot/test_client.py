"""The official `hubspot-api-client`, unchanged, against a live Marketable server.

Each test runs a real HTTP server (pytest-django's `live_server`) on a transactional
database and drives it with `HubSpot(access_token=<API token>, host=<server>)`, as a
HubSpot customer's own code would after changing only the host.
"""

import json
import threading

import pytest
from django.apps import apps as django_apps
from hubspot import HubSpot
from hubspot.crm.contacts import (
    ApiException,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    Filter,
    FilterGroup,
    PublicMergeInput,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInputForCreate,
    SimplePublicObjectBatchInputUpsert,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.discovery.discovery_base import DiscoveryBase
from rest_framework.authtoken.models import Token

from contacts.models import Contact, LifecycleStage
from contacts.status.models import LedgerAction, StatusChange
from contacts.status.selectors import usage_current
from crm.roles import sync_roles
from tests.contacts.hubspot.conftest import make_marketing
from tests.factories import ContactFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def ops(live_server, transactional_db):
    # A transactional test starts from empty tables: put back the roles the migrations make.
    sync_roles(django_apps)
    return UserFactory(username="hubspot-ops", groups=["Marketing ops"])


@pytest.fixture(autouse=True)
def requests_finished(live_server, transactional_db):
    """Join the live server's request threads before the test's database goes away: a
    thread still closing its request (Django's request_finished) after the test would find
    the database flushed, or no longer shared."""
    yield
    for thread in threading.enumerate():
        if thread.name.endswith("(process_request_thread)"):
            thread.join(timeout=60)


def _closing_connections(api_client_package, api_name, config):
    """The client's own factory, asking the server to close each connection after its
    answer, so that each request's thread ends with it (see `requests_finished`)."""
    api = DiscoveryBase._default_api_factory(api_client_package, api_name, config)
    api.api_client.set_default_header("Connection", "close")
    return api


def client_for(user, live_server) -> HubSpot:
    token = Token.objects.create(user=user)
    return HubSpot(access_token=token.key, host=live_server.url, api_factory=_closing_connections)


@pytest.fixture
def hubspot(ops, live_server) -> HubSpot:
    return client_for(ops, live_server)


def api_error(call) -> tuple[int, dict]:
    """The status and the JSON body of the ApiException a client call raises."""
    with pytest.raises(ApiException) as raised:
        call()
    return raised.value.status, json.loads(raised.value.body)


def to_milliseconds(instant):
    """An instant as HubSpot's format carries it."""
    return instant.replace(microsecond=instant.microsecond // 1000 * 1000)


def assert_hubspot_error(body: dict, category: str) -> None:
    assert body["status"] == "error"
    assert body["category"] == category
    assert body["message"]
    assert body["correlationId"]


def test_create_then_read_by_id_and_by_email(hubspot):
    created = hubspot.crm.contacts.basic_api.create(
        SimplePublicObjectInputForCreate(
            properties={
                "email": "Ada@Example.com",
                "firstname": "Ada",
                "lifecyclestage": "marketingqualifiedlead",
                "hs_lead_status": "OPEN",
            }
        )
    )

    contact = Contact.objects.get(pk=int(created.id))
    assert (contact.email, contact.first_name) == ("ada@example.com", "Ada")
    assert (contact.lifecycle_stage, contact.lead_status) == (LifecycleStage.MQL, "open")
    assert contact.marketing_status == "non_marketing"  # created by API: non-marketing
    asked = ["email", "lifecyclestage", "hs_lead_status", "hs_marketable_status"]
    by_id = hubspot.crm.contacts.basic_api.get_by_id(contact_id=created.id, properties=asked)
    by_email = hubspot.crm.contacts.basic_api.get_by_id(
        contact_id="ada@example.com", id_property="email", properties=asked
    )
    for found in (by_id, by_email):
        assert found.id == created.id
        assert found.properties["email"] == "ada@example.com"
        assert found.properties["lifecyclestage"] == "marketingqualifiedlead"
        assert found.properties["hs_lead_status"] == "OPEN"
        assert found.properties["hs_marketable_status"] == "false"
        assert found.created_at == to_milliseconds(contact.created_at)


def test_pages_through_every_contact_with_after(hubspot):
    ids = [c.pk for c in ContactFactory.create_batch(5)]

    seen, after, pages = [], None, 0
    while True:
        page = hubspot.crm.contacts.basic_api.get_page(limit=2, after=after)
        seen += [int(result.id) for result in page.results]
        pages += 1
        if page.paging is None:
            break
        after = page.paging.next.after

    assert seen == ids
    assert pages == 3
    assert [int(c.id) for c in hubspot.crm.contacts.get_all()] == ids


def test_batch_upsert_updates_by_email_and_creates_the_rest(hubspot):
    existing = ContactFactory(email="known@example.com", first_name="Old")
    batch = BatchInputSimplePublicObjectBatchInputUpsert(
        inputs=[
            SimplePublicObjectBatchInputUpsert(
                id="known@example.com", id_property="email", properties={"firstname": "New"}
            ),
            SimplePublicObjectBatchInputUpsert(
                id="fresh@example.com", id_property="email", properties={"lastname": "Fresh"}
            ),
        ]
    )

    answer = hubspot.crm.contacts.batch_api.upsert(batch)

    assert answer.status == "COMPLETE"
    by_new = {result.new: result for result in answer.results}
    assert by_new[False].id == str(existing.pk)
    assert by_new[False].properties["firstname"] == "New"
    fresh = Contact.objects.get(email="fresh@example.com")
    assert by_new[True].id == str(fresh.pk)
    assert fresh.last_name == "Fresh"
    assert Contact.objects.get(pk=existing.pk).first_name == "New"


def test_a_batch_with_a_failed_input_is_a_multi_status_answer_to_the_client(hubspot):
    taken = ContactFactory(email="taken@example.com")
    batch = BatchInputSimplePublicObjectBatchInputForCreate(
        inputs=[
            SimplePublicObjectBatchInputForCreate(properties={"email": "new@example.com"}),
            SimplePublicObjectBatchInputForCreate(properties={"email": "taken@example.com"}),
        ]
    )

    answer = hubspot.crm.contacts.batch_api.create(batch)

    assert [r.properties["email"] for r in answer.results] == ["new@example.com"]
    assert answer.num_errors == 1
    assert answer.errors[0].category == "CONFLICT"
    assert answer.errors[0].message == f"Contact already exists. Existing ID: {taken.pk}"
    assert Contact.objects.filter(email="new@example.com").exists()


def test_the_properties_api_lists_the_mapped_properties(hubspot):
    listed = hubspot.crm.properties.core_api.get_all(object_type="contacts")
    status = hubspot.crm.properties.core_api.get_by_name(
        object_type="contacts", property_name="hs_marketable_status"
    )

    names = [p.name for p in listed.results]
    assert {"email", "lifecyclestage", "hs_marketable_status", "hs_object_id"} <= set(names)
    assert status.modification_metadata.read_only_value is False
    assert {o.value for o in status.options} == {"true", "false"}


def test_search_with_two_filter_groups_and_a_sort(hubspot):
    low = ContactFactory(email="low@acme.io", lifecycle_stage="mql", lead_score=5)
    high = ContactFactory(email="high@acme.io", lifecycle_stage="mql", lead_score=50)
    customer = ContactFactory(email="buyer@other.org", lifecycle_stage="customer", lead_score=20)
    ContactFactory(email="lead@other.org", lifecycle_stage="lead", lead_score=90)
    request = PublicObjectSearchRequest(
        filter_groups=[
            FilterGroup(
                filters=[
                    Filter(
                        property_name="lifecyclestage",
                        operator="EQ",
                        value="marketingqualifiedlead",
                    ),
                    Filter(property_name="email", operator="CONTAINS_TOKEN", value="*@acme.io"),
                ]
            ),
            FilterGroup(
                filters=[Filter(property_name="lifecyclestage", operator="EQ", value="customer")]
            ),
        ],
        sorts=[{"propertyName": "hubspotscore", "direction": "DESCENDING"}],
        properties=["email", "hubspotscore"],
        limit=2,
    )

    first = hubspot.crm.contacts.search_api.do_search(request)
    request.after = first.paging.next.after
    second = hubspot.crm.contacts.search_api.do_search(request)

    assert first.total == second.total == 3
    ordered = [int(r.id) for r in first.results + second.results]
    assert ordered == [high.pk, customer.pk, low.pk]
    assert first.results[0].properties["hubspotscore"] == "50"
    assert second.paging is None


def test_archive_deletes_through_the_status_service(hubspot, ops):
    contact = ContactFactory()
    make_marketing(contact)
    live_before = usage_current().live_count

    hubspot.crm.contacts.basic_api.archive(contact_id=str(contact.pk))

    assert not Contact.objects.filter(pk=contact.pk).exists()
    assert usage_current().live_count == live_before - 1
    deleted = StatusChange.objects.get(contact_id=contact.pk, action=LedgerAction.DELETED)
    assert deleted.actor_id == ops.pk
    assert deleted.source_type == "api"


def test_writing_the_marketing_status_false_is_deferred_to_the_next_update_date(hubspot, ops):
    contact = ContactFactory()
    make_marketing(contact)

    answer = hubspot.crm.contacts.basic_api.update(
        contact_id=str(contact.pk),
        simple_public_object_input=SimplePublicObjectInput(
            properties={"hs_marketable_status": "false"}
        ),
    )

    assert answer.properties["hs_marketable_status"] == "true"
    assert answer.properties["hs_marketable_until_renewal"] == "true"
    contact.refresh_from_db()
    assert contact.marketing_until == usage_current().period_end
    scheduled = StatusChange.objects.get(
        contact_id=contact.pk, action=LedgerAction.DOWNGRADE_SCHEDULED
    )
    assert (scheduled.source_type, scheduled.actor_id) == ("api", ops.pk)
    assert scheduled.source_name == "HubSpot API: hubspot-ops"
    read = hubspot.crm.contacts.basic_api.get_by_id(
        contact_id=str(contact.pk),
        properties=["hs_marketable_status", "hs_marketable_until_renewal"],
    )
    assert read.properties["hs_marketable_status"] == "true"
    assert read.properties["hs_marketable_until_renewal"] == "true"


def test_writing_the_marketing_status_true_takes_effect_at_once(hubspot):
    contact = ContactFactory()

    answer = hubspot.crm.contacts.basic_api.update(
        contact_id=str(contact.pk),
        simple_public_object_input=SimplePublicObjectInput(
            properties={"hs_marketable_status": "true"}
        ),
    )

    assert answer.properties["hs_marketable_status"] == "true"
    assert answer.properties["hs_marketable_until_renewal"] == "false"
    assert StatusChange.objects.filter(contact_id=contact.pk, action=LedgerAction.UPGRADE).exists()


def test_an_unknown_property_is_hubspots_validation_error(hubspot):
    status, body = api_error(
        lambda: hubspot.crm.contacts.basic_api.create(
            SimplePublicObjectInputForCreate(
                properties={"email": "x@example.com", "favourite_colour": "blue"}
            )
        )
    )

    assert status == 400
    assert_hubspot_error(body, "VALIDATION_ERROR")
    assert "favourite_colour" in body["message"]
    assert body["errors"][0]["code"] == "PROPERTY_DOESNT_EXIST"
    assert not Contact.objects.exists()


def test_a_duplicate_email_is_hubspots_conflict(hubspot):
    existing = ContactFactory(email="taken@example.com")

    status, body = api_error(
        lambda: hubspot.crm.contacts.basic_api.create(
            SimplePublicObjectInputForCreate(properties={"email": "TAKEN@example.com"})
        )
    )

    assert status == 409
    assert_hubspot_error(body, "CONFLICT")
    assert body["message"] == f"Contact already exists. Existing ID: {existing.pk}"
    assert Contact.objects.count() == 1


def test_no_token_is_hubspots_authentication_error(ops, live_server):
    anonymous = HubSpot(host=live_server.url, api_factory=_closing_connections)

    status, body = api_error(lambda: anonymous.crm.contacts.basic_api.get_page())

    assert status == 401
    assert_hubspot_error(body, "INVALID_AUTHENTICATION")


def test_the_client_merges_two_contacts(hubspot):
    keep = ContactFactory(email="keep@example.com")
    gone = ContactFactory(email="gone@example.com")
    make_marketing(gone)

    merged = hubspot.crm.contacts.basic_api.merge(
        public_merge_input=PublicMergeInput(
            primary_object_id=str(keep.pk), object_id_to_merge=str(gone.pk)
        )
    )

    assert merged.id == str(keep.pk)
    assert merged.properties["email"] == "keep@example.com"
    assert merged.properties["hs_marketable_status"] == "true"
    assert not Contact.objects.filter(pk=gone.pk).exists()
    # Merging it again answers the same survivor; a missing id is HubSpot's 404.
    again = hubspot.crm.contacts.basic_api.merge(
        public_merge_input=PublicMergeInput(
            primary_object_id=str(keep.pk), object_id_to_merge=str(gone.pk)
        )
    )
    assert again.id == str(keep.pk)
    status, body = api_error(
        lambda: hubspot.crm.contacts.basic_api.merge(
            public_merge_input=PublicMergeInput(
                primary_object_id=str(keep.pk), object_id_to_merge="987654"
            )
        )
    )
    assert (status, body["category"]) == (404, "OBJECT_NOT_FOUND")
