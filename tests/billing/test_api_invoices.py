"""GET /api/billing/periods/, /api/billing/invoices/ and POST /api/billing/preview/."""

import pytest
from rest_framework.test import APIClient

from billing.services import billing_close_periods, billing_finalise_invoices
from contacts.models import Contact
from contacts.status.models import StatusChange
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing
from tests.conftest import at
from tests.factories import UserFactory

SRC = StatusSource("import", name="api test")


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def billing_admin(db):
    return client_for(UserFactory(username="cfo", groups=["Billing admin"]))


@pytest.fixture
def closed_november(account, subscription, make_contacts):
    contacts_set_marketing(contacts=make_contacts(6_150), source=SRC, at=at(2026, 11, 10))
    billing_close_periods(as_of=at(2026, 12, 1), at=at(2026, 12, 1, 1))
    billing_finalise_invoices(at=at(2026, 12, 2))


def test_invoices_with_their_lines(billing_admin, closed_november):
    response = billing_admin.get("/api/billing/invoices/")

    assert response.status_code == 200
    invoice = response.data["results"][0]
    assert (invoice["number"], invoice["status"], invoice["total"], invoice["peak_count"]) == (
        "INV-20261101",
        "final",
        102_500,
        6_150,
    )
    assert [(line["kind"], line["amount"]) for line in invoice["lines"]] == [
        ("base", 80_000),
        ("overage", 22_500),
    ]
    assert invoice["lines"][1]["details"]["blocks"] == 1
    detail = billing_admin.get("/api/billing/invoices/INV-20261101/")
    assert detail.status_code == 200 and detail.data["total"] == 102_500


def test_invoices_and_periods_are_read_only_even_for_a_superuser(superuser, closed_november):
    billing_admin = client_for(superuser)
    for url in ("/api/billing/invoices/INV-20261101/", "/api/billing/periods/1/"):
        assert billing_admin.put(url, {"total": 1}, format="json").status_code == 405
        assert billing_admin.patch(url, {"total": 1}, format="json").status_code == 405
        assert billing_admin.delete(url).status_code == 405
    assert billing_admin.post("/api/billing/invoices/", {}, format="json").status_code == 405
    assert billing_admin.get("/api/billing/invoices/INV-20261101/").data["total"] == 102_500


def test_periods_list(billing_admin, closed_november):
    response = billing_admin.get("/api/billing/periods/")
    assert response.status_code == 200
    november = response.data["results"][0]
    assert (november["status"], november["peak_count"], november["counter_peak_count"]) == (
        "closed",
        6_150,
        6_150,
    )
    assert (november["invoice_number"], november["invoice_total"]) == ("INV-20261101", 102_500)


def test_sales_cannot_read_invoices(account, sales, closed_november):
    client = client_for(sales)
    assert client.get("/api/billing/invoices/").status_code == 403
    assert client.get("/api/billing/periods/").status_code == 403
    assert APIClient().get("/api/billing/invoices/").status_code in (401, 403)


def test_preview_by_number_ids_and_filter(account, subscription, billing_admin, make_contacts):
    contacts_set_marketing(contacts=make_contacts(1_990), source=SRC)
    waiting = list(make_contacts(20).values_list("pk", flat=True))
    ledger = StatusChange.objects.count()

    by_number = billing_admin.post("/api/billing/preview/", {"would_add": 11}, format="json")
    by_ids = billing_admin.post("/api/billing/preview/", {"ids": waiting}, format="json")
    by_filter = billing_admin.post(
        "/api/billing/preview/", {"filter": {"marketing_status": "non_marketing"}}, format="json"
    )

    assert by_number.status_code == by_ids.status_code == by_filter.status_code == 200
    assert (
        by_number.data["peak_after"],
        by_number.data["blocks_after"],
        by_number.data["invoice_delta"],
    ) == (
        2_001,
        1,
        22_500,
    )
    assert by_ids.data["would_add"] == by_filter.data["would_add"] == 20
    assert by_ids.data["invoice_delta"] == 22_500
    assert StatusChange.objects.count() == ledger
    assert Contact.objects.filter(marketing_status="marketing").count() == 1_990


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"would_add": -1},
        {"would_add": 1, "ids": [1]},
        {"filter": {"nonsense": 1}},
        {"ids": ["x"]},
    ],
)
def test_preview_rejects_bad_input(account, subscription, billing_admin, body):
    response = billing_admin.post("/api/billing/preview/", body, format="json")
    assert response.status_code == 400
