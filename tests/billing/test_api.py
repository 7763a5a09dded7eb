"""GET /api/billing/usage/: this period's counts priced against the subscription."""

import pytest
from rest_framework.test import APIClient

from billing.models import Alert, Subscription
from contacts.models import Contact
from contacts.status.selectors import usage_current
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
    forecast = response.data.pop("forecast")
    assert response.data == {
        "live_count": 0,
        "peak_count": 0,
        "opening_count": 0,
        "included_contacts": 2_000,
        "percent_used": 0.0,
        "period_start": api_time(period.period_start),
        "period_end": api_time(period.period_end),
        "next_update_date": api_time(period.period_end),
        "pending_downgrades": 0,
        "pending_saving": 0,
        "overage_blocks": 0,
        "headroom": 2_000,
        "block_size": 5_000,
        "currency": "USD",
        "estimate": {"base": 80_000, "overage": 0, "total": 80_000},
        "hard_cap": None,
        "alerts": [],
    }
    assert {k: forecast[k] for k in ("peak_count", "rate_per_day", "blocks", "total")} == {
        "peak_count": 0,
        "rate_per_day": 0.0,
        "blocks": 0,
        "total": 80_000,
    }


def test_usage_after_api_changes(ops):
    subscription = Subscription.load()
    subscription.included_contacts = 2
    subscription.block_size = 1
    subscription.block_price = 100
    subscription.base_price = 1_000
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
    assert data["estimate"] == {"base": 1_000, "overage": 200, "total": 1_200}
    assert data["percent_used"] == 200.0
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


def test_usage_lists_open_alerts(ops):
    period = usage_current()
    Alert.objects.create(
        period_start=period.period_start,
        kind="threshold",
        threshold=75,
        fired_at=period.period_start,
        message="75% of the tier reached",
    )

    response = ops.get(USAGE)

    assert response.data["alerts"] == [
        {
            "kind": "threshold",
            "threshold": 75,
            "message": "75% of the tier reached",
            "fired_at": api_time(period.period_start),
        }
    ]
