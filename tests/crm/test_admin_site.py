"""The admin's shared changelist base: filter values the database cannot take."""

import pytest
from django.db import connection

from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "query",
    [
        "created_at__gte=0001-01-01T00:00:00%2B05:00",  # before year 1 in UTC
        "created_at__lt=9999-12-31T23:59:59-05:00",  # after year 9999 in UTC
    ],
)
def test_a_date_filter_out_of_range_is_explained_not_a_server_error(
    client, superuser, account, query
):
    ContactFactory()
    client.force_login(superuser)

    first = client.get(f"/admin/contacts/contact/?{query}")
    if connection.vendor == "postgresql":
        # PostgreSQL holds instants from 4713 BC on: the filter applies, and the contact,
        # made today, is after year 1 and before year 9999.
        assert first.status_code == 200
        assert first.context["cl"].result_count == 1
        return
    assert first.status_code == 302 and first["Location"].endswith("?e=1")

    page = client.get(first["Location"])
    assert page.status_code == 200
    text = page.content.decode()
    assert "The list is shown without filters: a value in the address cannot be used" in text


def test_a_date_filter_in_range_still_filters(client, superuser, account):
    ContactFactory(email="kept@example.org")
    client.force_login(superuser)
    page = client.get("/admin/contacts/contact/?created_at__gte=2000-01-01T00:00:00%2B05:00")
    assert page.status_code == 200
    assert "kept@example.org" in page.content.decode()
