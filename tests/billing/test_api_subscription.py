"""GET/PUT/PATCH /api/billing/subscription/ and /api/billing/calendar/: read by staff,
changed by a Billing admin, validated by the models' own rules (as the admin is)."""

import pytest
import time_machine
from rest_framework.test import APIClient

from billing.models import Subscription
from crm.models import Account
from tests.conftest import at
from tests.factories import UserFactory

SUBSCRIPTION = "/api/billing/subscription/"
CALENDAR = "/api/billing/calendar/"


def client_of(*groups, **flags):
    client = APIClient()
    client.force_authenticate(UserFactory(groups=list(groups), **flags))
    return client


@pytest.fixture
def billing(subscription, account):
    return client_of("Billing admin")


@pytest.mark.parametrize("role", ["Marketing ops", "Billing admin", "Auditor"])
def test_staff_who_may_view_read_the_subscription_in_minor_units(subscription, role):
    response = client_of(role).get(SUBSCRIPTION)

    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("included_contacts", "base_price", "block_size")} == {
        "included_contacts": 2_000,
        "base_price": 80_000,
        "block_size": 5_000,
    }
    assert (body["block_price"], body["currency"]) == (22_500, "USD")


def test_sales_cannot_read_the_subscription(subscription):
    assert client_of("Sales").get(SUBSCRIPTION).status_code == 403


@pytest.mark.parametrize("role", ["Marketing ops", "Auditor"])
def test_only_a_billing_admin_changes_the_subscription(subscription, role):
    response = client_of(role).patch(SUBSCRIPTION, {"block_price": 1}, format="json")

    assert response.status_code == 403
    assert Subscription.load().block_price == 22_500


def test_a_billing_admin_changes_the_prices(billing):
    response = billing.patch(
        SUBSCRIPTION, {"block_price": 30_000, "included_contacts": 5_000}, format="json"
    )

    assert response.status_code == 200, response.content
    stored = Subscription.load()
    assert (stored.block_price, stored.included_contacts, stored.base_price) == (
        30_000,
        5_000,
        80_000,
    )
    assert response.json()["block_price"] == 30_000


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"block_size": 0}, "block_size"),
        ({"base_price": -1}, "base_price"),
        ({"block_price": "225.00"}, "block_price"),
        ({"currency": "DOLLARS"}, "currency"),
    ],
)
def test_bad_prices_are_a_400_naming_the_field_and_nothing_changes(billing, body, field):
    response = billing.patch(SUBSCRIPTION, body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    stored = Subscription.load()
    assert (stored.block_size, stored.base_price, stored.block_price, stored.currency) == (
        5_000,
        80_000,
        22_500,
        "USD",
    )


def test_alert_settings_are_read_only_here(billing):
    response = billing.patch(SUBSCRIPTION, {"spike_threshold": 5}, format="json")

    assert response.status_code == 200
    assert Subscription.load().spike_threshold == 1_000


@time_machine.travel(at(2026, 11, 20, 12), tick=False)
def test_the_calendar_shows_the_current_period(billing):
    response = billing.get(CALENDAR)

    assert response.status_code == 200
    assert response.json() == {
        "update_day": 1,
        "yearly_plan": False,
        "time_zone": "UTC",
        "effective_update_day": 1,
        "period_start": "2026-11-01T00:00:00Z",
        "next_update_date": "2026-12-01T00:00:00Z",
    }


@time_machine.travel(at(2026, 11, 20, 12), tick=False)
def test_a_billing_admin_moves_the_update_day_and_the_period_follows(billing):
    response = billing.patch(
        CALENDAR, {"update_day": 15, "time_zone": "Europe/Stockholm"}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    # Local midnight of 15 November in Stockholm (UTC+1) is 23:00 UTC the day before.
    assert (body["period_start"], body["next_update_date"]) == (
        "2026-11-14T23:00:00Z",
        "2026-12-14T23:00:00Z",
    )
    account = Account.load()
    assert (account.update_day, account.time_zone) == (15, "Europe/Stockholm")


@pytest.mark.parametrize(
    ("body", "field"),
    [({"update_day": 32}, "update_day"), ({"time_zone": "Mars/Olympus"}, "time_zone")],
)
def test_a_bad_calendar_is_a_400_and_nothing_changes(billing, body, field):
    response = billing.patch(CALENDAR, body, format="json")

    assert response.status_code == 400
    assert field in response.json()
    account = Account.load()
    assert (account.update_day, account.time_zone) == (1, "UTC")


def test_an_unknown_time_zone_is_explained(billing):
    response = billing.patch(CALENDAR, {"time_zone": "Mars/Olympus"}, format="json")

    assert "is not a known time zone" in response.json()["time_zone"][0]


@pytest.mark.parametrize("role", ["Marketing ops", "Auditor"])
def test_only_a_billing_admin_changes_the_calendar(account, role):
    client = client_of(role)

    assert client.get(CALENDAR).status_code == 200
    assert client.patch(CALENDAR, {"update_day": 9}, format="json").status_code == 403
    assert Account.load().update_day == 1
