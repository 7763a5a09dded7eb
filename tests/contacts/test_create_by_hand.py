"""A contact created by hand (admin or API) is non-marketing unless a user with
contacts.change_marketing_status picks marketing (DESIGN §1.3): whatever source a user
without the permission picks, the contact ends non-marketing, and nothing is billed."""

import pytest
from django.test import Client
from rest_framework.test import APIClient

from contacts.models import Contact, SourceKind
from contacts.services import contact_create, contacts_creation_policy
from contacts.status.models import PeriodUsage, StatusChange
from contacts.status.results import MarketingNotPermitted, StatusSource
from tests.factories import SourceFactory

ADD = "/admin/contacts/contact/add/"
CONTACTS = "/api/contacts/"


@pytest.fixture
def web_form(db):
    """A source whose default makes new contacts marketing."""
    return SourceFactory(name="Web form", kind=SourceKind.FORM)


def api_client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def admin_client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def billed() -> tuple[int, int]:
    """Ledger rows and the live count: what a marketing contact would have moved."""
    live = PeriodUsage.objects.values_list("live_count", flat=True).first() or 0
    return StatusChange.objects.count(), live


def test_the_policy_makes_a_creator_without_the_permission_non_marketing(sales, web_form):
    requester = StatusSource("api", id=str(sales.pk), name="sales")

    decision = contacts_creation_policy(source=web_form, requester=requester, creator=sales)

    assert (decision.marketing, decision.status_source) == (False, requester)
    with pytest.raises(MarketingNotPermitted, match="contacts.change_marketing_status"):
        contacts_creation_policy(source=web_form, requested_marketing=True, creator=sales)


def test_the_policy_keeps_the_source_default_for_a_permitted_creator(marketing_ops, web_form):
    decision = contacts_creation_policy(source=web_form, creator=marketing_ops)

    assert decision.marketing is True


def test_contact_create_by_a_user_without_the_permission_ignores_a_marketing_default(
    account, sales, web_form
):
    contact = contact_create(email="a@example.com", source=web_form, actor=sales)

    assert contact.marketing_status == "non_marketing"
    assert billed() == (0, 0)


def test_api_sales_picking_a_form_source_creates_a_non_marketing_contact(account, sales, web_form):
    # When Sales creates a contact from a source whose default is marketing
    response = api_client(sales).post(
        CONTACTS, {"email": "lead@example.com", "source": web_form.pk}, format="json"
    )

    # Then it is stored, non-marketing, naming the API user as the reason, and billed nothing
    assert response.status_code == 201, response.data
    assert response.data["marketing_status"] == "non_marketing"
    assert (response.data["source"], response.data["marketing_reason_type"]) == (
        web_form.pk,
        "api",
    )
    assert response.data["marketing_reason_id"] == str(sales.pk)
    assert billed() == (0, 0)


def test_api_sales_asking_for_marketing_is_refused_and_nothing_is_stored(account, sales, web_form):
    response = api_client(sales).post(
        CONTACTS,
        {"email": "lead@example.com", "source": web_form.pk, "marketing": True},
        format="json",
    )

    assert response.status_code == 403
    assert "contacts.change_marketing_status" in response.data["detail"]
    assert Contact.objects.count() == 0
    assert billed() == (0, 0)


def test_api_marketing_ops_picking_a_form_source_gets_its_marketing_default(
    account, marketing_ops, web_form
):
    response = api_client(marketing_ops).post(
        CONTACTS, {"email": "lead@example.com", "source": web_form.pk}, format="json"
    )

    assert response.status_code == 201
    assert response.data["marketing_status"] == "marketing"
    assert billed() == (1, 1)


def test_admin_sales_add_form_offers_no_status_and_creates_non_marketing(account, sales, web_form):
    client = admin_client(sales)

    page = client.get(ADD)
    response = client.post(
        ADD,
        {
            "email": "lead@example.com",
            "source": str(web_form.pk),
            "marketing": "on",  # not on the form: it cannot matter
            "lifecycle_stage": "lead",
            "contact_type": "prospect",
        },
    )

    assert page.status_code == 200
    assert 'name="marketing"' not in page.content.decode()
    assert "non-marketing whatever the source" in page.content.decode()
    assert response.status_code == 302
    contact = Contact.objects.get()
    assert (contact.email, contact.source_id, contact.marketing_status) == (
        "lead@example.com",
        web_form.pk,
        "non_marketing",
    )
    assert (contact.marketing_reason_type, contact.marketing_reason_id) == ("manual", str(sales.pk))
    assert billed() == (0, 0)


def test_api_sales_cannot_start_a_marketing_import(account, sales, settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from contacts.imports.models import ContactImport

    settings.MEDIA_ROOT = tmp_path
    response = api_client(sales).post(
        "/api/imports/",
        {"file": SimpleUploadedFile("a.csv", b"Email\na@b.co\n"), "marketing": "true"},
        format="multipart",
    )

    assert response.status_code == 403
    assert ContactImport.objects.count() == 0
    assert Contact.objects.count() == 0
