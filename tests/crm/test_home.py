"""The admin's home: Marketable's name, what matters first, the models grouped by task."""

import re

import pytest
from django.test import Client

from billing.models import Subscription
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing
from tests.factories import ContactFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def subscription(db):
    subscription = Subscription.load()
    subscription.included_contacts = 2_000
    subscription.base_price = 80_000
    subscription.save()
    return subscription


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def group_titles(html: str) -> list[str]:
    return re.findall(r'<a href="/admin/#[a-z]+" class="section" title="[^"]*">([^<]+)</a>', html)


def test_the_home_page_opens_on_the_bill_then_the_tasks(account, subscription):
    contacts = [ContactFactory() for _ in range(3)]
    contacts_set_marketing(
        contacts=[c.pk for c in contacts], source=StatusSource("manual", name="t")
    )
    root = client_for(UserFactory(username="root", is_superuser=True))

    html = root.get("/admin/").content.decode()

    assert "<title>Home | Marketable</title>" in html
    assert '<div id="site-name"><a href="/admin/">Marketable</a></div>' in html
    assert "Django administration" not in html and "View site" not in html
    billing = html[html.index('id="home-billing"') :]
    assert re.search(r"Marketing contacts now</h3><div class=\"value\">3</div>", billing)
    assert "of 2,000 included" in billing
    assert "800.00 USD" in billing
    assert "No change waits for approval." in html
    assert "No imports yet." in html
    assert group_titles(html) == [
        "Contacts",
        "Marketing status",
        "Workflows and scoring",
        "Bringing contacts in",
        "Reaching contacts",
        "Billing",
        "Account and people",
    ]
    assert 'href="/admin/billing/dashboard/"' in html


def test_each_panel_shows_only_what_the_role_may_see(account, subscription):
    sales = client_for(UserFactory(username="sales", groups=["Sales"]))

    html = sales.get("/admin/").content.decode()

    assert 'id="home-billing"' not in html
    assert 'id="home-approvals"' not in html
    assert "Billing" not in group_titles(html)
    assert "Contacts" in group_titles(html)


def test_an_app_page_keeps_the_apps_own_models():
    root = client_for(UserFactory(username="root", is_superuser=True))

    html = root.get("/admin/contacts/").content.decode()

    assert "Models in the Contacts application" in html
    assert "Billing periods" not in html


def test_the_root_and_the_favicon_lead_somewhere():
    client = Client()

    home = client.get("/")
    icon = client.get("/favicon.ico")

    assert (home.status_code, home["Location"]) == (302, "/admin/")
    assert (icon.status_code, icon["Location"]) == (302, "/static/crm/favicon.svg")
