"""GET /api/billing/usage/: this period's counts priced against the subscription."""

import pytest
from rest_framework.test import APIClient

from billing.models import Subscription
from contacts.models import Contact
from contacts.selectors import usage_current
from tests.factories import ContactFactory, UserFactory

USAGE = "/api/billing/usage/"


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def api_time(value) -> str:
    return value.isoformat().replace("+00:00", "Z")


@pytest.fixture
def ops(account, marketing_ops):
    return client_for(marketing_ops)


def test_usage_of_an_empty_period(ops):
    period = usage_current()

    response = ops.get(USAGE)

    assert response.status_code == 200
    assert response.data == {
        "live_count": 0,
        "peak_count": 0,
        "opening_count": 0,
        "included_contacts": 2_000,
        "period_start": api_time(period.period_start),
        "period_end": api_time(period.period_end),
        "next_update_date": api_time(period.period_end),
        "pending_downgrades": 0,
        "overage_blocks": 0,
        "currency": "USD",
    }


def test_usage_after_api_changes(ops):
    subscription = Subscription.load()
    subscription.included_contacts = 2
    subscription.block_size = 1
    subscription.currency = "EUR"
    subscription.save()
    contacts = ContactFactory.create_batch(4)
    ids = [c.pk for c in contacts]
    ops.post("/api/contacts/marketing-status/", {"status": "marketing", "ids": ids}, format="json")
    ops.post(
        f"/api/contacts/{ids[0]}/marketing-status/", {"status": "non_marketing"}, format="json"
    )
    ops.delete(f"/api/contacts/{ids[1]}/")

    response = ops.get(USAGE)

    assert response.status_code == 200
    data = response.data
    assert {
        k: data[k]
        for k in (
            "live_count",
            "peak_count",
            "pending_downgrades",
            "included_contacts",
            "overage_blocks",
            "currency",
        )
    } == {
        "live_count": 3,  # four made marketing, one deleted; the pending one still counts
        "peak_count": 4,
        "pending_downgrades": 1,
        "included_contacts": 2,
        "overage_blocks": 2,  # ceil((4 - 2) / 1)
        "currency": "EUR",
    }
    assert data["next_update_date"] == api_time(usage_current().period_end)
    assert Contact.objects.count() == 3


def test_overage_blocks_round_up(ops):
    subscription = Subscription.load()
    subscription.included_contacts = 1
    subscription.block_size = 5
    subscription.save()
    contacts = ContactFactory.create_batch(3)
    ops.post(
        "/api/contacts/marketing-status/",
        {"status": "marketing", "ids": [c.pk for c in contacts]},
        format="json",
    )

    response = ops.get(USAGE)

    assert (response.data["peak_count"], response.data["overage_blocks"]) == (3, 1)


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (["Billing admin"], 200),
        (["Marketing ops"], 200),
        (["Auditor"], 200),
        (["Sales"], 403),
        ([], 403),
    ],
)
def test_usage_permissions(account, groups, expected):
    user = UserFactory(username="u", groups=groups)

    assert client_for(user).get(USAGE).status_code == expected


def test_usage_needs_authentication(account):
    response = APIClient().get(USAGE)

    assert response.status_code == 401


def test_usage_is_read_only(ops):
    assert ops.post(USAGE, {}, format="json").status_code == 405
