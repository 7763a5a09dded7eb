"""The HubSpot-compatible API's edges, through DRF's test client: limits, idProperty,
permissions, the property rules, errors and query counts."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from contacts.models import Contact
from contacts.status.models import PendingApproval, StatusChange, StatusChangeRequest
from tests.contacts.hubspot.conftest import bearer_client, make_marketing
from tests.factories import ContactFactory, SourceFactory, UserFactory, set_guardrails

CONTACTS = "/crm/v3/objects/contacts"
SEARCH = f"{CONTACTS}/search"


def contact_url(key, **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{CONTACTS}/{key}" + (f"?{query}" if query else "")


def assert_error(response, status: int, category: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["status"] == "error"
    assert body["category"] == category
    assert body["correlationId"] == response["X-HubSpot-Correlation-Id"]
    assert body["message"]
    return body


def snapshot():
    return (
        list(Contact.objects.order_by("id").values_list()),
        list(StatusChange.objects.order_by("id").values_list("contact_id", "action")),
    )


@pytest.fixture
def superuser_api(account, superuser):
    """Permission checks cost no query for a superuser: the counts below are the reads'."""
    client = APIClient()
    client.force_authenticate(superuser)
    return client


# Lists


@pytest.mark.parametrize("limit", [0, 101, "ten"])
def test_a_list_limit_outside_1_to_100_is_refused(ops_api, limit):
    response = ops_api.get(CONTACTS, {"limit": limit})

    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert body["errors"][0]["in"] == "limit"


def test_a_list_page_of_100_is_one_query(superuser_api):
    source = SourceFactory()
    Contact.objects.bulk_create(
        Contact(email=f"p{i}@example.com", source=source) for i in range(120)
    )

    with CaptureQueriesContext(connection) as queries:
        response = superuser_api.get(CONTACTS, {"limit": 100, "properties": "hs_analytics_source"})

    assert response.status_code == 200
    assert len(response.json()["results"]) == 100
    assert len(queries) == 1
    after = response.json()["paging"]["next"]["after"]
    rest = superuser_api.get(CONTACTS, {"limit": 100, "after": after}).json()
    assert len(rest["results"]) == 20
    assert "paging" not in rest


def test_properties_may_be_repeated_or_comma_separated_and_unknown_ones_are_ignored(ops_api):
    contact = ContactFactory(company="Acme", phone="555")

    response = ops_api.get(f"{contact_url(contact.pk)}?properties=company,nope&properties=phone")

    assert response.status_code == 200
    assert response.json()["properties"] == {
        "company": "Acme",
        "phone": "555",
        "hs_object_id": str(contact.pk),
        "createdate": response.json()["createdAt"],
        "lastmodifieddate": response.json()["updatedAt"],
    }


def test_archived_lists_are_empty_because_a_deleted_contact_is_gone(ops_api):
    contact = ContactFactory()

    assert ops_api.get(CONTACTS, {"archived": "true"}).json() == {"results": []}
    assert_error(ops_api.get(contact_url(contact.pk, archived="true")), 404, "OBJECT_NOT_FOUND")


# idProperty


def test_id_property_email_reads_updates_and_archives_by_email(ops_api):
    contact = ContactFactory(email="ada@example.com")

    read = ops_api.get(contact_url("ADA@example.com", idProperty="email"))
    patched = ops_api.patch(
        contact_url("ada@example.com", idProperty="email"),
        {"properties": {"company": "Analytical Engines"}},
        format="json",
    )
    deleted = ops_api.delete(contact_url("ada@example.com", idProperty="email"))

    assert read.json()["id"] == str(contact.pk)
    assert patched.json()["properties"]["company"] == "Analytical Engines"
    assert deleted.status_code == 204
    assert not Contact.objects.filter(pk=contact.pk).exists()


def test_an_email_is_not_an_id_without_id_property(ops_api):
    ContactFactory(email="ada@example.com")

    assert_error(ops_api.get(contact_url("ada@example.com")), 404, "OBJECT_NOT_FOUND")
    assert_error(ops_api.get(contact_url("9" * 30)), 404, "OBJECT_NOT_FOUND")


def test_an_id_property_that_is_not_unique_is_refused(ops_api):
    contact = ContactFactory()

    body = assert_error(
        ops_api.get(contact_url(contact.pk, idProperty="firstname")), 400, "VALIDATION_ERROR"
    )
    assert "firstname" in body["message"]


def test_archiving_a_contact_that_does_not_exist_is_done_already(ops_api):
    assert ops_api.delete(contact_url(424242)).status_code == 204


def test_updating_a_missing_contact_is_not_found_and_writes_nothing(ops_api):
    response = ops_api.patch(contact_url(424242), {"properties": {"company": "X"}}, format="json")

    assert_error(response, 404, "OBJECT_NOT_FOUND")


# Writes: the property rules


def test_a_read_only_property_is_refused_by_name(ops_api):
    contact = ContactFactory()
    before = snapshot()

    response = ops_api.patch(
        contact_url(contact.pk),
        {"properties": {"hubspotscore": "99", "firstname": "Changed"}},
        format="json",
    )

    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert body["errors"] == [
        {
            "message": '"hubspotscore" is a read only property; its value cannot be set.',
            "code": "READ_ONLY_VALUE",
            "context": {"propertyName": ["hubspotscore"]},
        }
    ]
    assert snapshot() == before


def test_an_option_a_property_does_not_have_is_refused(ops_api):
    contact = ContactFactory()

    response = ops_api.patch(
        contact_url(contact.pk), {"properties": {"lifecyclestage": "mvp"}}, format="json"
    )

    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert body["errors"][0]["code"] == "INVALID_OPTION"
    assert "marketingqualifiedlead" in body["errors"][0]["message"]


def test_a_bad_email_is_refused_naming_the_property(ops_api):
    response = ops_api.post(CONTACTS, {"properties": {"email": "not-an-email"}}, format="json")

    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert body["errors"][0]["context"] == {"propertyName": ["email"]}
    assert body["errors"][0]["code"] == "INVALID_EMAIL"
    assert not Contact.objects.exists()


def test_changing_an_email_to_one_in_use_is_a_conflict(ops_api):
    taken = ContactFactory(email="taken@example.com")
    contact = ContactFactory(email="mine@example.com")

    response = ops_api.patch(
        contact_url(contact.pk), {"properties": {"email": "taken@example.com"}}, format="json"
    )

    body = assert_error(response, 409, "CONFLICT")
    assert body["message"] == f"Contact already exists. Existing ID: {taken.pk}"
    assert Contact.objects.get(pk=contact.pk).email == "mine@example.com"


def test_values_read_back_in_hubspots_formats(ops_api):
    contact = ContactFactory(unsubscribed=True, hard_bounced=True, lead_status="", company="")
    make_marketing(contact)

    props = ops_api.get(
        contact_url(contact.pk),
        {
            "properties": "hs_email_optout,hs_email_hard_bounce_reason_enum,hs_lead_status,"
            "company,hs_marketable_reason_type,hs_marketable_reason_id,hs_analytics_source"
        },
    ).json()["properties"]

    assert props["hs_email_optout"] == "true"
    assert props["hs_email_hard_bounce_reason_enum"] == "OTHER"
    assert props["hs_lead_status"] is None
    assert props["company"] is None
    assert props["hs_marketable_reason_type"] == "MANUAL"
    assert props["hs_analytics_source"] == "CRM_UI"
    assert props["createdate"].endswith("Z")


def test_malformed_json_is_a_validation_error(ops_api):
    response = ops_api.generic("POST", CONTACTS, "{not json", content_type="application/json")

    assert_error(response, 400, "VALIDATION_ERROR")


def test_associations_are_refused_rather_than_dropped(ops_api):
    response = ops_api.post(
        CONTACTS,
        {"properties": {"email": "a@example.com"}, "associations": [{"to": {"id": "1"}}]},
        format="json",
    )

    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert "Associations are not supported" in body["message"]
    assert not Contact.objects.exists()


# Permissions


def test_without_the_status_permission_writing_the_status_is_refused_and_nothing_changes(
    sales_api,
):
    contact = ContactFactory(first_name="Before")
    before = snapshot()

    response = sales_api.patch(
        contact_url(contact.pk),
        {"properties": {"firstname": "After", "hs_marketable_status": "true"}},
        format="json",
    )

    body = assert_error(response, 403, "MISSING_SCOPES")
    assert body["errors"][0]["context"] == {
        "requiredPermissions": ["contacts.change_marketing_status"]
    }
    assert snapshot() == before
    assert not StatusChangeRequest.objects.exists()


def test_without_the_status_permission_a_batch_writing_the_status_changes_nothing(sales_api):
    one, two = ContactFactory(), ContactFactory()
    before = snapshot()

    response = sales_api.post(
        f"{CONTACTS}/batch/update",
        {
            "inputs": [
                {"id": str(one.pk), "properties": {"company": "Fine"}},
                {"id": str(two.pk), "properties": {"hs_marketable_status": "false"}},
            ]
        },
        format="json",
    )

    assert_error(response, 403, "MISSING_SCOPES")
    assert snapshot() == before


def test_without_the_status_permission_creating_with_a_status_is_refused(sales_api):
    response = sales_api.post(
        CONTACTS,
        {"properties": {"email": "a@example.com", "hs_marketable_status": "false"}},
        format="json",
    )

    assert_error(response, 403, "MISSING_SCOPES")
    assert not Contact.objects.exists()


def test_sales_may_create_and_update_but_not_archive(sales_api):
    created = sales_api.post(CONTACTS, {"properties": {"email": "a@example.com"}}, format="json")
    contact_id = created.json()["id"]

    refused = sales_api.delete(contact_url(contact_id))

    assert created.status_code == 201
    body = assert_error(refused, 403, "MISSING_SCOPES")
    assert "contacts.delete_contact" in body["message"]
    assert Contact.objects.filter(pk=contact_id).exists()


@pytest.mark.parametrize(
    ("method", "path", "data"),
    [
        ("get", CONTACTS, None),
        ("post", SEARCH, {}),
        ("post", f"{CONTACTS}/batch/read", {"inputs": []}),
        ("get", "/crm/v3/properties/contacts", None),
    ],
)
def test_reading_needs_the_view_permission(account, method, path, data):
    client = bearer_client(UserFactory(username="nobody"))

    response = getattr(client, method)(path, data, format="json")

    body = assert_error(response, 403, "MISSING_SCOPES")
    assert "contacts.view_contact" in body["message"]


def test_auditors_read_but_may_not_create(account, db):
    auditor = bearer_client(UserFactory(username="auditor", groups=["Auditor"]))

    assert auditor.get(CONTACTS).status_code == 200
    refused = auditor.post(CONTACTS, {"properties": {"email": "a@example.com"}}, format="json")
    assert_error(refused, 403, "MISSING_SCOPES")
    assert not Contact.objects.exists()


def test_a_wrong_token_and_drfs_own_keyword_are_refused(account, marketing_ops):
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    drf_keyword = APIClient()
    drf_keyword.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=marketing_ops)}")

    assert_error(wrong.get(CONTACTS), 401, "INVALID_AUTHENTICATION")
    assert_error(drf_keyword.get(CONTACTS), 401, "INVALID_AUTHENTICATION")


# The marketing status


def test_creating_as_marketing_with_the_permission_is_marketing_at_once(ops_api, marketing_ops):
    response = ops_api.post(
        CONTACTS,
        {"properties": {"email": "a@example.com", "hs_marketable_status": "true"}},
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["properties"]["hs_marketable_status"] == "true"
    contact = Contact.objects.get(email="a@example.com")
    assert contact.marketing_status == "marketing"
    upgrade = StatusChange.objects.get(contact_id=contact.pk)
    assert (upgrade.action, upgrade.source_type, upgrade.actor_id) == (
        "upgrade",
        "api",
        marketing_ops.pk,
    )


def test_setting_marketing_again_cancels_a_pending_downgrade(ops_api):
    contact = ContactFactory()
    make_marketing(contact)
    ops_api.patch(
        contact_url(contact.pk), {"properties": {"hs_marketable_status": "false"}}, format="json"
    )

    response = ops_api.patch(
        contact_url(contact.pk), {"properties": {"hs_marketable_status": "true"}}, format="json"
    )

    assert response.json()["properties"]["hs_marketable_until_renewal"] == "false"
    contact.refresh_from_db()
    assert contact.marketing_until is None
    assert list(
        StatusChange.objects.filter(contact_id=contact.pk)
        .order_by("id")
        .values_list("action", flat=True)
    ) == ["upgrade", "downgrade_scheduled", "downgrade_cancelled"]


def test_an_upgrade_past_the_hard_cap_waits_for_approval_and_the_fields_are_kept(ops_api):
    set_guardrails(hard_cap=0)
    contact = ContactFactory(company="Old")

    response = ops_api.patch(
        contact_url(contact.pk),
        {"properties": {"company": "New", "hs_marketable_status": "true"}},
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["properties"]["hs_marketable_status"] == "false"
    assert "approval" in body["heldForApproval"]["hs_marketable_status"]
    contact.refresh_from_db()
    assert (contact.company, contact.marketing_status) == ("New", "non_marketing")
    assert PendingApproval.objects.filter(contact_ids=[contact.pk]).exists()


# Batches


def test_more_than_100_inputs_is_refused_whole(ops_api):
    inputs = [{"properties": {"email": f"p{i}@example.com"}} for i in range(101)]

    response = ops_api.post(f"{CONTACTS}/batch/create", {"inputs": inputs}, format="json")

    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert body["errors"][0]["in"] == "inputs"
    assert not Contact.objects.exists()


def test_a_batch_create_keeps_the_good_inputs_and_reports_the_bad_ones(ops_api):
    taken = ContactFactory(email="taken@example.com")

    response = ops_api.post(
        f"{CONTACTS}/batch/create",
        {
            "inputs": [
                {"properties": {"email": "new@example.com"}, "objectWriteTraceId": "a"},
                {"properties": {"email": "taken@example.com"}, "objectWriteTraceId": "b"},
                {"properties": {"email": "x@example.com", "colour": "red"}},
            ]
        },
        format="json",
    )

    assert response.status_code == 207
    body = response.json()
    assert body["status"] == "COMPLETE"
    assert [r["properties"]["email"] for r in body["results"]] == ["new@example.com"]
    assert body["results"][0]["objectWriteTraceId"] == "a"
    assert body["numErrors"] == 2
    conflict, invalid = sorted(body["errors"], key=lambda e: e["context"]["index"])
    assert conflict["category"] == "CONFLICT"
    assert conflict["message"] == f"Contact already exists. Existing ID: {taken.pk}"
    assert conflict["context"] == {"index": ["1"], "objectWriteTraceId": ["b"]}
    assert invalid["category"] == "VALIDATION_ERROR"
    assert invalid["errors"][0]["context"] == {"propertyName": ["colour"]}
    assert set(Contact.objects.values_list("email", flat=True)) == {
        "taken@example.com",
        "new@example.com",
    }


def test_a_batch_create_without_errors_is_201(ops_api):
    response = ops_api.post(
        f"{CONTACTS}/batch/create",
        {"inputs": [{"properties": {"email": "a@example.com"}}]},
        format="json",
    )

    assert response.status_code == 201
    assert "errors" not in response.json()


def test_a_batch_read_reports_the_ids_it_cannot_find(ops_api):
    contact = ContactFactory()

    response = ops_api.post(
        f"{CONTACTS}/batch/read",
        {"inputs": [{"id": str(contact.pk)}, {"id": "424242"}], "properties": ["email"]},
        format="json",
    )

    assert response.status_code == 207
    body = response.json()
    assert [r["id"] for r in body["results"]] == [str(contact.pk)]
    assert body["errors"][0]["category"] == "OBJECT_NOT_FOUND"
    assert body["errors"][0]["context"] == {"ids": ["424242"]}


def test_a_batch_update_refuses_the_same_contact_twice_and_a_missing_one(ops_api):
    contact = ContactFactory(email="ada@example.com")

    response = ops_api.post(
        f"{CONTACTS}/batch/update",
        {
            "inputs": [
                {"id": str(contact.pk), "properties": {"company": "First"}},
                {"id": "ada@example.com", "idProperty": "email", "properties": {"company": "2"}},
                {"id": "424242", "properties": {"company": "Nobody"}},
            ]
        },
        format="json",
    )

    assert response.status_code == 207
    body = response.json()
    assert [r["properties"]["company"] for r in body["results"]] == ["First"]
    categories = sorted(e["category"] for e in body["errors"])
    assert categories == ["OBJECT_NOT_FOUND", "VALIDATION_ERROR"]
    assert Contact.objects.get(pk=contact.pk).company == "First"


def test_a_batch_status_change_is_one_request_per_direction(ops_api):
    settled = ContactFactory.create_batch(2)
    make_marketing(*settled)
    others = ContactFactory.create_batch(2)
    requests_before = StatusChangeRequest.objects.count()

    response = ops_api.post(
        f"{CONTACTS}/batch/update",
        {
            "inputs": [
                *[
                    {"id": str(c.pk), "properties": {"hs_marketable_status": "false"}}
                    for c in settled
                ],
                *[
                    {"id": str(c.pk), "properties": {"hs_marketable_status": "true"}}
                    for c in others
                ],
            ]
        },
        format="json",
    )

    assert response.status_code == 200
    assert {
        r["id"]: (
            r["properties"]["hs_marketable_status"],
            r["properties"]["hs_marketable_until_renewal"],
        )
        for r in response.json()["results"]
    } == {
        **{str(c.pk): ("true", "true") for c in settled},
        **{str(c.pk): ("true", "false") for c in others},
    }
    assert StatusChangeRequest.objects.count() == requests_before + 2


def test_a_batch_upsert_needs_email_as_its_id_property(ops_api):
    response = ops_api.post(
        f"{CONTACTS}/batch/upsert",
        {"inputs": [{"id": "1", "idProperty": "hs_object_id", "properties": {}}]},
        format="json",
    )

    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert "email" in body["message"]


def test_a_batch_archive_deletes_the_contacts_it_finds(ops_api):
    one, two = ContactFactory(), ContactFactory()
    make_marketing(one)

    response = ops_api.post(
        f"{CONTACTS}/batch/archive",
        {"inputs": [{"id": str(one.pk)}, {"id": str(two.pk)}, {"id": "424242"}]},
        format="json",
    )

    assert response.status_code == 204
    assert not Contact.objects.exists()
    assert StatusChange.objects.filter(contact_id=one.pk, action="deleted").count() == 1


# Properties and other paths


def test_the_property_list_says_what_is_writable(ops_api):
    response = ops_api.get("/crm/v3/properties/contacts")

    by_name = {p["name"]: p for p in response.json()["results"]}
    assert by_name["hs_marketable_status"]["modificationMetadata"]["readOnlyValue"] is False
    assert by_name["hubspotscore"]["modificationMetadata"]["readOnlyValue"] is True
    assert by_name["email"]["hasUniqueValue"] is True
    stages = [o["value"] for o in by_name["lifecyclestage"]["options"]]
    assert "marketingqualifiedlead" in stages
    assert by_name["createdate"]["type"] == "datetime"
    assert ops_api.get("/crm/v3/properties/contacts/email").json()["label"] == "Email"
    assert_error(ops_api.get("/crm/v3/properties/contacts/nope"), 404, "OBJECT_NOT_FOUND")
    assert_error(ops_api.get("/crm/v3/properties/companies"), 400, "VALIDATION_ERROR")


def test_other_paths_are_hubspots_not_found(ops_api):
    assert_error(ops_api.get("/crm/v3/objects/companies"), 404, "OBJECT_NOT_FOUND")


def test_nul_characters_are_refused_not_server_errors(ops_api):
    contact = ContactFactory(first_name="Before")

    written = ops_api.patch(
        contact_url(contact.pk), {"properties": {"firstname": "a\x00b"}}, format="json"
    )
    read = ops_api.get(contact_url("a%00b%40example.com", idProperty="email"))

    body = assert_error(written, 400, "VALIDATION_ERROR")
    assert "NUL" in body["message"]
    assert Contact.objects.get(pk=contact.pk).first_name == "Before"
    assert_error(read, 404, "OBJECT_NOT_FOUND")


def test_a_value_too_long_for_its_field_is_refused_naming_the_property(ops_api):
    contact = ContactFactory()

    response = ops_api.patch(
        contact_url(contact.pk), {"properties": {"firstname": "x" * 101}}, format="json"
    )

    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert body["errors"][0]["context"] == {"propertyName": ["firstname"]}
