"""Money is typed and shown in currency units everywhere in the admin, stored in minor units."""

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from billing.models import Invoice, Subscription
from billing.money import MoneyFormField, format_major, parse_money
from billing.services import billing_close_periods
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing
from tests.conftest import at
from tests.factories import UserFactory

SUBSCRIPTION = reverse("admin:billing_subscription_change", args=[Subscription.SINGLETON_PK])


@pytest.fixture
def billing_admin(subscription):
    client = Client()
    client.force_login(UserFactory(username="billing", groups=["Billing admin"]))
    return client


@pytest.mark.parametrize(
    ("typed", "currency", "minor"),
    [
        ("800", "USD", 80_000),
        ("800.5", "USD", 80_050),
        ("1,025.50", "USD", 102_550),
        (" 225.00 USD ", "USD", 22_500),
        ("0", "EUR", 0),
        ("1,500", "JPY", 1_500),
    ],
)
def test_an_amount_is_typed_in_currency_units(typed, currency, minor):
    assert parse_money(typed, currency) == minor
    assert parse_money(format_major(minor, currency), currency) == minor


@pytest.mark.parametrize(
    ("typed", "currency", "message"),
    [
        ("8.001", "USD", "USD has 2 decimals: type at most 2 after the point."),
        ("12.5", "JPY", "JPY has no decimals: type a whole amount."),
        ("eight", "USD", "Type an amount like 800 or 1,025.50."),
        ("1,00", "USD", "Type an amount like 800 or 1,025.50."),
        ("1e3", "USD", "Type an amount like 800 or 1,025.50."),
    ],
)
def test_a_mistyped_amount_says_what_to_type(typed, currency, message):
    with pytest.raises(ValidationError) as error:
        parse_money(typed, currency)

    assert error.value.messages == [message]


def test_a_negative_price_is_refused():
    with pytest.raises(ValidationError) as error:
        MoneyFormField(currency="USD").clean("-5")

    assert error.value.messages == ["The amount cannot be below 0.00 USD."]


def test_the_subscription_page_shows_and_takes_prices_in_dollars(billing_admin, subscription):
    page = billing_admin.get(SUBSCRIPTION).content.decode()

    assert 'value="800.00"' in page and 'value="225.00"' in page
    assert "2,000 marketing contacts for 800.00 USD a month" in page
    assert "80000" not in page and "22500" not in page

    response = billing_admin.post(
        SUBSCRIPTION,
        {
            "included_contacts": 2000,
            "currency": "USD",
            "base_price": "950.50",
            "block_size": 5000,
            "block_price": "1,225",
        },
    )

    assert response.status_code == 302, response.context["adminform"].form.errors
    subscription.refresh_from_db()
    assert (subscription.base_price, subscription.block_price) == (95_050, 122_500)


def test_a_mistyped_price_is_refused_and_nothing_changes(billing_admin, subscription):
    response = billing_admin.post(
        SUBSCRIPTION,
        {
            "included_contacts": 2000,
            "currency": "USD",
            "base_price": "9.999",
            "block_size": 5000,
            "block_price": "225",
        },
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["base_price"] == [
        "USD has 2 decimals: type at most 2 after the point."
    ]
    subscription.refresh_from_db()
    assert subscription.base_price == 80_000


def test_invoice_lines_show_their_prices_as_money(
    account, subscription, billing_admin, make_contacts
):
    contacts_set_marketing(
        contacts=make_contacts(3), source=StatusSource("import", name="t"), at=at(2026, 10, 5)
    )
    billing_close_periods(at=at(2026, 11, 15))
    invoice = Invoice.objects.get(period__start=at(2026, 10, 1))

    page = billing_admin.get(reverse("admin:billing_invoice_change", args=[invoice.pk]))

    text = page.content.decode()
    assert "Base price: 800.00 USD" in text
    assert "Block price: 225.00 USD" in text
    assert "Included: 2,000" in text
