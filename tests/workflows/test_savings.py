"""The savings report (DESIGN §1.6): counts per reason, savings, admin page and API."""

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from billing.selectors import billing_demotion_saving
from contacts.models import Contact
from contacts.status.results import StatusSource
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from tests.conftest import at
from tests.factories import UserFactory
from workflows.selectors import savings_report

SRC = StatusSource("import", name="setup")
NOW = at(2026, 11, 20, 12)
API = "/api/workflows/savings/"
PAGE = "/admin/workflows/savings/"


@pytest.fixture
def book(small_plan, make_contacts):
    """20 marketing contacts created 1 Jul 2026 (live 20; one pending → next opening 19):
    3 unsubscribed (one also bounced), 2 more bounced, 5 never engaged (one of them
    unsubscribed), 1 unsubscribed pending; 2 unsubscribed non-marketing contacts."""
    ids = list(
        make_contacts(20, last_engaged_at=at(2026, 11, 1))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    Contact.objects.filter(pk__in=ids).update(created_at=at(2026, 7, 1))
    Contact.objects.filter(pk__in=ids[0:3] + ids[19:20]).update(unsubscribed=True)
    Contact.objects.filter(pk__in=ids[2:5]).update(hard_bounced=True)
    Contact.objects.filter(pk__in=ids[0:1] + ids[5:9]).update(last_engaged_at=None)
    contacts_set_marketing(contacts=ids, source=SRC, at=at(2026, 11, 2))
    contacts_set_non_marketing(contacts=ids[19:20], source=SRC, at=at(2026, 11, 3))
    make_contacts(2, unsubscribed=True)
    return ids


def test_counts_per_reason_and_savings(book):
    report = savings_report(now=NOW, unengaged_days=90, price=billing_demotion_saving)
    # Next opening 19 (1000 + 2 blocks of 100); each line priced alone
    assert report.reasons == {
        "unsubscribed": {"count": 3, "once": 3, "saving": 0},  # 16: still 2 blocks
        "hard_bounced": {"count": 3, "once": 2, "saving": 0},  # 16
        "unengaged": {"count": 5, "once": 4, "saving": 100},  # 14: 1 block
    }
    assert report.saving == 200  # all 9: 10, no block
    assert report.total == 9
    assert report.already_pending == 1
    assert report.next_update_date == at(2026, 12, 1)
    assert report.currency == "USD"


def test_the_unengaged_window_is_a_parameter(book):
    # Engaged on 1 Nov: unengaged for 10 days at NOW (20 Nov), not for 30
    assert savings_report(now=NOW, unengaged_days=10).reasons["unengaged"]["count"] == 19
    assert savings_report(now=NOW, unengaged_days=30).reasons["unengaged"]["count"] == 5


def _user(*perms, name="viewer"):
    user = UserFactory(username=name)
    user.user_permissions.set(Permission.objects.filter(codename__in=perms))
    return user


def test_api_answers_the_report(book, time_machine):
    time_machine.move_to(NOW, tick=False)
    client = APIClient()
    client.force_authenticate(_user("view_savings"))
    response = client.get(API, {"unengaged_days": 90})
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 9
    assert body["reasons"]["unengaged"] == {"count": 5, "once": 4, "saving": 100}
    assert body["saving"] == 200  # 19 → 10: 1000 + 2×100 → 1000
    assert body["already_pending"] == 1
    assert body["next_update_date"] == "2026-12-01T00:00:00Z"


@pytest.mark.parametrize("days", ["0", "3651", "ten", "-5"])
def test_api_refuses_bad_days(book, days):
    client = APIClient()
    client.force_authenticate(_user("view_savings"))
    response = client.get(API, {"unengaged_days": days})
    assert response.status_code == 400
    assert "unengaged_days" in response.json()


def test_api_needs_auth_and_the_permission(book):
    assert APIClient().get(API).status_code == 401
    client = APIClient()
    client.force_authenticate(_user("view_contact", name="plain"))
    assert client.get(API).status_code == 403


def test_admin_page_links_into_the_contacts_list(book, client, time_machine):
    time_machine.move_to(NOW, tick=False)
    client.force_login(_user("view_savings", "view_contact"))
    page = client.get(PAGE, {"unengaged_days": "90"})
    assert page.status_code == 200
    text = page.content.decode()
    assert 'id="savings-total">9<' in text
    assert 'id="savings-saving">2.00 USD<' in text
    link = "/admin/contacts/contact/?marketing_status=marketing&amp;pending=false&amp;unengaged=90"
    assert link in text
    listing = client.get(link.replace("&amp;", "&"))
    assert listing.status_code == 200
    assert listing.context["cl"].result_count == 5


def test_admin_page_needs_the_permission(book, client):
    client.force_login(_user("view_contact", name="plain"))
    assert client.get(PAGE).status_code == 403


@pytest.mark.parametrize(
    ("group", "allowed"),
    [("Billing admin", True), ("Auditor", True), ("Marketing ops", True), ("Sales", False)],
)
def test_roles(book, group, allowed):
    user = UserFactory(username=f"r-{group}", groups=[group])
    assert user.has_perm("workflows.view_savings") is allowed
