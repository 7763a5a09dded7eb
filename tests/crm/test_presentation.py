"""How the admin writes dates, numbers and plurals: one format, the account's time zone,
thousands separators, nouns that agree with their counts."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from django.utils import timezone
from django.utils.formats import date_format

from billing.models import DailyUsage
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing, contacts_set_non_marketing
from crm.text import counted
from tests.factories import ContactFactory, UserFactory

SOURCE = StatusSource("manual", name="test")


@pytest.fixture
def root_client(db):
    client = Client()
    client.force_login(UserFactory(username="root", is_superuser=True, is_staff=True))
    return client


def test_one_date_format_and_one_date_time_format():
    instant = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.UTC)

    with timezone.override(dt.UTC):
        assert date_format(timezone.localtime(instant)) == "2 Nov 2026"
        assert date_format(timezone.localtime(instant), "DATETIME_FORMAT") == "2 Nov 2026, 12:00"
        assert date_format(instant, "SHORT_DATETIME_FORMAT") == "2 Nov 2026, 12:00"


@pytest.mark.parametrize(
    "count, noun, text",
    [
        (1, "block", "1 block"),
        (2, "block", "2 blocks"),
        (5_018, "row", "5,018 rows"),
        (0, "period", "0 periods"),
    ],
)
def test_counted_agrees_with_its_count(count, noun, text):
    assert counted(count, noun) == text


def test_admin_instants_are_in_the_account_time_zone_in_the_one_format(root_client, account):
    account.time_zone = "Europe/Stockholm"
    account.save()
    contact = ContactFactory(email="sven@example.se")
    contacts_set_marketing(contacts=contact, source=SOURCE)
    result = contacts_set_non_marketing(contacts=contact, source=SOURCE)
    local = result.effective_from.astimezone(ZoneInfo("Europe/Stockholm"))
    assert (local.hour, local.minute) == (0, 0)  # local midnight, 23:00 the day before in UTC

    html = root_client.get("/admin/contacts/statuschange/").content.decode()

    expected = f"{local.day} {local:%b %Y}, 00:00"
    assert f'<td class="field-effective_at nowrap">{expected}</td>' in html
    assert "midnight" not in html and "a.m." not in html and "p.m." not in html


def test_the_api_keeps_utc(account):
    from rest_framework.test import APIClient

    account.time_zone = "Europe/Stockholm"
    account.save()
    client = APIClient()
    client.force_authenticate(UserFactory(username="api", is_superuser=True, is_staff=True))
    ContactFactory(email="a@example.com")

    body = client.get("/api/contacts/").json()

    assert (
        body["results"][0]["created_at"].endswith("Z")
        or "+00:00" in body["results"][0]["created_at"]
    )


def test_counts_have_thousands_separators_and_nouns_agree(root_client, account):
    DailyUsage.objects.create(day=dt.date(2026, 11, 2), max_count=5_018, became_marketing=1_449)

    one = root_client.get("/admin/billing/dailyusage/").content.decode()
    DailyUsage.objects.create(day=dt.date(2026, 11, 3), max_count=2_309)
    two = root_client.get("/admin/billing/dailyusage/").content.decode()

    assert '<td class="field-max_count">5,018</td>' in one
    assert '<td class="field-became_marketing">1,449</td>' in one
    assert "1 daily usage record" in one and "1 daily usage records" not in one
    assert "2 daily usage records" in two
    assert str(DailyUsage.objects.get(max_count=5_018)) == "2 Nov 2026: at most 5,018 marketing"


def test_search_results_agree_with_their_count(root_client, account):
    ContactFactory(email="only@example.com")

    html = root_client.get("/admin/contacts/contact/?q=only").content.decode()

    assert "1 result" in html and "1 results" not in html


def test_form_inputs_and_ids_are_not_localised(root_client, account):
    contact = ContactFactory(email="big@example.com", lead_score=12_345)

    html = root_client.get(f"/admin/contacts/contact/{contact.pk}/change/").content.decode()
    listing = root_client.get("/admin/contacts/contact/").content.decode()

    assert f'href="/admin/contacts/contact/{contact.pk}/change/' in listing
    assert '<td class="field-lead_score">12,345</td>' in listing
    assert "12,345" in html  # shown read-only on the page
    assert 'value="12,345"' not in html
