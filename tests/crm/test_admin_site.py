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


# --- the navigation sidebar --------------------------------------------------------


def sidebar(client, path: str) -> str:
    html = client.get(path).content.decode()
    return html.split('<nav class="sticky" id="nav-sidebar"')[1].split("</nav>")[0]


def test_the_sidebar_marks_the_open_model_and_follows_the_page(client, superuser, account):
    client.force_login(superuser)

    on_contacts = sidebar(client, "/admin/contacts/contact/")
    on_sources = sidebar(client, "/admin/contacts/source/")

    assert '<tr class="model-contact current-model">' in on_contacts
    assert '<tr class="model-source">' in on_contacts
    assert '<tr class="model-contact">' in on_sources
    assert '<tr class="model-source current-model">' in on_sources
    contact = ContactFactory()
    on_a_contact = sidebar(client, f"/admin/contacts/contact/{contact.pk}/change/")
    assert '<tr class="model-contact current-model">' in on_a_contact


def test_the_sidebar_lists_what_the_user_may_open_and_follows_their_permissions(
    client, sales, account
):
    from django.contrib.auth.models import Permission

    client.force_login(sales)
    before = sidebar(client, "/admin/contacts/contact/")
    assert 'href="/admin/contacts/contact/"' in before
    assert 'href="/admin/billing/invoice/"' not in before

    sales.user_permissions.add(Permission.objects.get(codename="view_invoice"))
    after = sidebar(client, "/admin/contacts/contact/")

    assert 'href="/admin/billing/invoice/"' in after
