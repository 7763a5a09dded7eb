"""Generated input never makes the HubSpot-compatible API answer 5xx: every request gets a
success or a 4xx with HubSpot's error body."""

import string
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from contacts.hubspot.mapping import PROPERTIES
from tests.factories import ContactFactory

KEYS = [
    "properties",
    "associations",
    "inputs",
    "id",
    "idProperty",
    "objectWriteTraceId",
    "filterGroups",
    "filters",
    "propertyName",
    "operator",
    "value",
    "highValue",
    "values",
    "sorts",
    "direction",
    "query",
    "limit",
    "after",
    *PROPERTIES,
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        ["", "true", "EQ", "IN", "email", "hs_object_id", "a@b.co", "1", "\x00", "*", "-1"]
    )
    | st.sampled_from(list(PROPERTIES))
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
POSTS = [
    "/crm/v3/objects/contacts",
    "/crm/v3/objects/contacts/search",
    "/crm/v3/objects/contacts/batch/create",
    "/crm/v3/objects/contacts/batch/read",
    "/crm/v3/objects/contacts/batch/update",
    "/crm/v3/objects/contacts/batch/upsert",
    "/crm/v3/objects/contacts/batch/archive",
]
path_text = st.text(alphabet=string.printable + "\x00é", max_size=20)
SETTINGS = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def assert_answered(response) -> None:
    assert response.status_code < 500, response.content
    if response.status_code >= 400:
        body = response.json()
        assert body["status"] == "error"
        assert body["category"]
        assert body["correlationId"]


@pytest.fixture
def api(account, superuser):
    ContactFactory.create_batch(3)
    client = APIClient()
    client.force_authenticate(superuser)
    return client


@SETTINGS
@given(path=st.sampled_from(POSTS), body=junk)
def test_junk_bodies_are_answered_without_a_server_error(api, path, body):
    assert_answered(api.post(path, body, format="json"))


@SETTINGS
@given(
    key=path_text,
    params=st.dictionaries(
        st.sampled_from(["properties", "idProperty", "archived", "limit", "after"]),
        path_text,
        max_size=3,
    ),
    method=st.sampled_from(["get", "patch", "delete"]),
    body=junk,
)
def test_junk_ids_and_query_strings_are_answered_without_a_server_error(
    api, key, params, method, body
):
    url = f"/crm/v3/objects/contacts/{quote(key, safe='')}?{urlencode(params)}"

    response = getattr(api, method)(url, body if method == "patch" else None, format="json")

    assert_answered(response)
