"""POST /api/billing/close/: the close through the API (Billing admin only)."""

import pytest
import time_machine
from rest_framework.test import APIClient

from billing.models import BillingPeriod, Invoice
from contacts.status.models import StatusChange
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing
from tests.conftest import at
from tests.factories import UserFactory

CLOSE = "/api/billing/close/"
SRC = StatusSource("import", name="close api test")


def client_of(*groups):
    client = APIClient()
    client.force_authenticate(UserFactory(groups=list(groups)))
    return client


@pytest.fixture
def october(account, subscription, make_contacts):
    """2,600 marketing contacts made in October 2026: one overage block."""
    contacts_set_marketing(contacts=make_contacts(2_600), source=SRC, at=at(2026, 10, 10))


@pytest.fixture
def billing():
    return client_of("Billing admin")


NOVEMBER = time_machine.travel(at(2026, 11, 2, 9), tick=False)


@NOVEMBER
def test_a_dry_run_answers_the_outcome_and_writes_nothing(october, billing):
    ledger_rows = StatusChange.objects.count()

    response = billing.post(CLOSE, {"dry_run": True}, format="json")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["dry_run"] is True
    assert body["detail"] == "Dry run, nothing written: 1 period would be closed."
    [outcome] = body["outcomes"]
    assert (outcome["period_start"], outcome["period_end"], outcome["status"]) == (
        "2026-10-01T00:00:00Z",
        "2026-11-01T00:00:00Z",
        "would_close",
    )
    assert (outcome["peak_count"], outcome["total"], outcome["currency"]) == (2_600, 102_500, "USD")
    assert not BillingPeriod.objects.exists()
    assert not Invoice.objects.exists()
    assert StatusChange.objects.count() == ledger_rows


@NOVEMBER
def test_a_close_closes_once_and_a_second_call_closes_nothing(october, billing):
    first = billing.post(CLOSE, {}, format="json")

    assert first.status_code == 200, first.content
    [outcome] = first.json()["outcomes"]
    assert outcome["status"] == "closed"
    invoice = Invoice.objects.get()
    assert (outcome["invoice_number"], outcome["total"]) == (invoice.number, invoice.total)
    assert invoice.total == 102_500

    second = billing.post(CLOSE, {}, format="json")

    assert second.status_code == 200
    assert second.json()["outcomes"] == []
    assert second.json()["detail"] == "Nothing to close: every period that has ended is closed."
    assert Invoice.objects.count() == 1
    assert BillingPeriod.objects.count() == 1


@NOVEMBER
def test_a_close_as_of_a_future_instant_is_refused(october, billing):
    response = billing.post(CLOSE, {"as_of": "2026-12-01T00:00:00Z"}, format="json")

    assert response.status_code == 400
    assert "as_of" in response.json()
    assert not BillingPeriod.objects.exists()


@NOVEMBER
def test_a_close_as_of_an_earlier_instant_closes_only_what_had_ended(october, billing):
    response = billing.post(CLOSE, {"as_of": "2026-10-31T00:00:00Z"}, format="json")

    assert response.status_code == 200
    assert response.json()["outcomes"] == []
    assert not BillingPeriod.objects.exists()


@NOVEMBER
def test_dry_run_must_be_a_boolean(october, billing):
    response = billing.post(CLOSE, {"dry_run": "yes"}, format="json")

    assert response.status_code == 400
    assert "dry_run" in response.json()
    assert not BillingPeriod.objects.exists()


@NOVEMBER
@pytest.mark.parametrize("role", ["Marketing ops", "Sales", "Auditor"])
def test_only_a_billing_admin_closes(october, role):
    for body in ({"dry_run": True}, {}):
        assert client_of(role).post(CLOSE, body, format="json").status_code == 403
    assert not BillingPeriod.objects.exists()


def test_anonymous_is_a_401(db):
    assert APIClient().post(CLOSE, {}, format="json").status_code == 401
