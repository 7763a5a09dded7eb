"""POST /crm/v3/objects/contacts/search: HubSpot's search request through the criteria
compiler — names and values mapped, one query a page, the total without a full count."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from contacts.hubspot import search
from contacts.models import Contact
from tests.contacts.hubspot.conftest import make_marketing
from tests.factories import ContactFactory, SourceFactory

SEARCH = "/crm/v3/objects/contacts/search"


def f(name, operator, **values):
    return {"propertyName": name, "operator": operator, **values}


def groups(*filter_lists):
    return [{"filters": list(filters)} for filters in filter_lists]


def found(api, body) -> list[int]:
    response = api.post(SEARCH, body, format="json")
    assert response.status_code == 200, response.content
    return [int(r["id"]) for r in response.json()["results"]]


@pytest.fixture
def superuser_api(account, superuser):
    client = APIClient()
    client.force_authenticate(superuser)
    return client


def test_a_page_with_its_total_is_one_query(superuser_api):
    for score in range(6):
        ContactFactory(lifecycle_stage="mql", lead_score=score)
    ContactFactory(lifecycle_stage="lead")
    body = {
        "filterGroups": groups(
            [f("lifecyclestage", "EQ", value="marketingqualifiedlead")],
            [f("hubspotscore", "GT", value="100")],
        ),
        "sorts": [{"propertyName": "hubspotscore", "direction": "DESCENDING"}],
        "query": "person",
        "properties": ["hubspotscore", "hs_analytics_source", "hs_marketable_status"],
        "limit": 2,
        "after": "2",
    }

    with CaptureQueriesContext(connection) as queries:
        response = superuser_api.post(SEARCH, body, format="json")

    assert len(queries) == 1
    data = response.json()
    assert data["total"] == 6
    assert [r["properties"]["hubspotscore"] for r in data["results"]] == ["3", "2"]
    assert data["paging"] == {"next": {"after": "4"}}


def test_the_total_stops_at_the_search_window_and_so_does_paging(ops_api, monkeypatch):
    monkeypatch.setattr(search, "SEARCH_WINDOW", 3)
    ids = [c.pk for c in ContactFactory.create_batch(5)]

    first = ops_api.post(SEARCH, {"limit": 2}, format="json").json()
    second = ops_api.post(
        SEARCH, {"limit": 2, "after": first["paging"]["next"]["after"]}, format="json"
    ).json()

    assert first["total"] == second["total"] == 3
    assert [int(r["id"]) for r in first["results"] + second["results"]] == ids[:3]
    assert "paging" not in second


def test_a_page_past_the_end_is_empty_with_the_total(ops_api):
    ContactFactory.create_batch(2)

    data = ops_api.post(SEARCH, {"after": "5"}, format="json").json()

    assert data == {"total": 2, "results": []}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"after": "10000"}, "after"),
        ({"limit": 201}, "limit"),
        ({"limit": 0}, "limit"),
        ({"sorts": ["nope"]}, None),
        ({"sorts": ["hs_marketable_status"]}, None),
        ({"sorts": [{"propertyName": "email", "direction": "UP"}]}, None),
        ({"query": " ".join(["w"] * 11)}, None),
    ],
)
def test_bad_paging_sorting_and_queries_are_validation_errors(ops_api, body, where):
    response = ops_api.post(SEARCH, body, format="json")

    assert response.status_code == 400
    data = response.json()
    assert data["category"] == "VALIDATION_ERROR"
    if where:
        assert data["errors"][0]["in"] == where


def test_an_unknown_or_unsearchable_property_is_named(ops_api):
    response = ops_api.post(
        SEARCH,
        {
            "filterGroups": groups(
                [f("email", "HAS_PROPERTY"), f("favourite_colour", "EQ", value="blue")],
                [f("hs_marketable_reason_id", "EQ", value="7")],
            )
        },
        format="json",
    )

    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [(e["code"], e["in"]) for e in errors] == [
        ("PROPERTY_DOESNT_EXIST", "filterGroups[0].filters[1].propertyName"),
        ("NOT_SEARCHABLE", "filterGroups[1].filters[0].propertyName"),
    ]


def test_the_compilers_errors_come_back_with_their_place(ops_api):
    response = ops_api.post(
        SEARCH,
        {"filterGroups": groups([f("hs_email_optout", "GT", value="true")])},
        format="json",
    )

    assert response.status_code == 400
    data = response.json()
    assert data["message"].startswith("Invalid search:")
    assert data["errors"][0]["in"] == "filterGroups[0].filters[0].operator"
    assert data["errors"][0]["code"] == "OPERATOR_NOT_ALLOWED"


def test_hubspots_values_are_mapped_to_ours(ops_api):
    mql = ContactFactory(lifecycle_stage="mql", lead_status="open")
    customer = ContactFactory(lifecycle_stage="customer", hard_bounced=True)
    imported = ContactFactory(source=SourceFactory(name="CSV", kind="import"))

    assert found(
        ops_api,
        {
            "filterGroups": groups(
                [f("lifecyclestage", "IN", values=["marketingqualifiedlead", "customer"])]
            )
        },
    ) == [mql.pk, customer.pk]
    assert found(ops_api, {"filterGroups": groups([f("hs_lead_status", "EQ", value="OPEN")])}) == [
        mql.pk
    ]
    assert found(
        ops_api, {"filterGroups": groups([f("hs_email_hard_bounce_reason_enum", "HAS_PROPERTY")])}
    ) == [customer.pk]
    assert found(
        ops_api, {"filterGroups": groups([f("hs_analytics_source", "EQ", value="IMPORT")])}
    ) == [imported.pk]
    assert found(
        ops_api, {"filterGroups": groups([f("hs_analytics_source", "NEQ", value="IMPORT")])}
    ) == [mql.pk, customer.pk]


def test_the_marketing_status_is_the_effective_one(ops_api):
    pending, settled = ContactFactory(), ContactFactory()
    ContactFactory()
    make_marketing(pending, settled)
    ops_api.patch(
        f"/crm/v3/objects/contacts/{pending.pk}",
        {"properties": {"hs_marketable_status": "false"}},
        format="json",
    )

    marketing = {"filterGroups": groups([f("hs_marketable_status", "EQ", value="true")])}
    assert found(ops_api, marketing) == [pending.pk, settled.pk]


def test_hs_object_id_and_lastmodifieddate_page_past_the_window(ops_api):
    contacts = ContactFactory.create_batch(4)
    Contact.objects.filter(pk=contacts[0].pk).update(
        updated_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    )
    body = {
        "filterGroups": groups(
            [
                f("hs_object_id", "GT", value=str(contacts[0].pk)),
                f("lastmodifieddate", "GTE", value="2021-01-01T00:00:00Z"),
            ]
        ),
        "sorts": ["-hs_object_id"],
    }

    assert found(ops_api, body) == [c.pk for c in reversed(contacts[1:])]
    old = {"filterGroups": groups([f("lastmodifieddate", "LT", value="1609459200000")])}
    assert found(ops_api, old) == [contacts[0].pk]


def test_the_query_matches_words_at_the_start_of_tokens_of_the_text_properties(ops_api):
    ada = ContactFactory(first_name="Ada", last_name="Lovelace", email="countess@example.com")
    ContactFactory(first_name="Adam", last_name="Smith")
    ContactFactory(first_name="Grace", company="Lovelace Trust")

    assert found(ops_api, {"query": "ada lov"}) == [ada.pk]
    assert found(ops_api, {"query": "countess"}) == [ada.pk]
    assert len(found(ops_api, {"query": "LOVELACE"})) == 2


def test_no_filter_groups_means_every_contact_in_id_order(ops_api):
    ids = [c.pk for c in ContactFactory.create_batch(3)]

    assert found(ops_api, {}) == ids
    assert found(ops_api, {"filterGroups": []}) == ids


def test_a_nul_character_in_a_filter_value_is_refused_not_a_server_error(ops_api):
    response = ops_api.post(
        SEARCH, {"filterGroups": groups([f("firstname", "EQ", value="a\x00b")])}, format="json"
    )

    assert response.status_code == 400
    assert "NUL" in response.json()["errors"][0]["message"]
