"""The admin's "Merge two contacts": the side-by-side page, then the merge."""

import pytest

from contacts.merge.models import MergedContact
from contacts.models import Contact
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing
from tests.factories import ContactFactory, SourceFactory

CHANGELIST = "/admin/contacts/contact/"


def action(*contacts, **extra):
    return {
        "action": "merge_contacts_action",
        "_selected_action": [str(c.pk) for c in contacts],
        "index": "0",
        **extra,
    }


@pytest.fixture
def pair(account):
    first = ContactFactory(email="first@example.com", first_name="Ann", phone="")
    second = ContactFactory(email="second@example.com", first_name="Anne", phone="+44 3")
    contacts_set_marketing(contacts=second, source=StatusSource("manual", name="test"))
    return first, second


def test_the_page_shows_both_contacts_side_by_side(pair, ops_client):
    first, second = pair

    response = ops_client.post(CHANGELIST, action(first, second))

    assert response.status_code == 200
    page = response.content.decode()
    for text in ("first@example.com", "second@example.com", "Ann", "Anne", "+44 3"):
        assert text in page
    assert 'name="value_first_name"' in page
    # A field both contacts have alike has no choice; an empty one says so.
    assert 'name="value_lifecycle_stage"' not in page
    assert 'name="value_phone"' in page and "(empty)" in page
    # The outcome and its cost: marketing, one contact fewer, the peak unchanged.
    assert "will be <strong>marketing</strong>" in page
    assert 'id="cost-preview"' in page
    assert MergedContact.objects.count() == 0


def test_confirming_merges_and_links_to_the_survivor(pair, ops_client):
    first, second = pair

    response = ops_client.post(
        CHANGELIST,
        action(
            first,
            second,
            post="yes",
            idempotency_key="admin-merge:t1",
            survivor=str(first.pk),
            value_first_name=str(second.pk),
            value_email=str(first.pk),
            value_phone=str(second.pk),
        ),
        follow=True,
    )

    assert response.status_code == 200
    page = response.content.decode()
    assert f'href="/admin/contacts/contact/{first.pk}/change/"' in page
    assert "The contact second@example.com was merged into" in page
    survivor = Contact.objects.get(pk=first.pk)
    assert (survivor.first_name, survivor.phone, survivor.marketing_status) == (
        "Anne",
        "+44 3",
        "marketing",
    )
    assert not Contact.objects.filter(pk=second.pk).exists()


def test_the_action_needs_exactly_two_contacts(pair, ops_client):
    first, _ = pair

    response = ops_client.post(CHANGELIST, action(first), follow=True)

    assert "Select exactly two contacts to merge." in response.content.decode()
    assert Contact.objects.count() == 2


def test_a_refused_merge_says_why_and_changes_nothing(pair, ops_client):
    _, second = pair
    locked = ContactFactory(email="app@example.com", source=SourceFactory(kind="mobile_app"))

    response = ops_client.post(
        CHANGELIST,
        action(
            locked,
            second,
            post="yes",
            idempotency_key="admin-merge:t2",
            survivor=str(locked.pk),
            value_source=str(locked.pk),
        ),
    )

    assert response.status_code == 200
    assert 'id="merge-error"' in response.content.decode()
    assert "locked source" in response.content.decode()
    assert Contact.objects.filter(pk=second.pk).exists()


def test_sales_is_not_offered_the_merge(pair, sales_client):
    first, second = pair

    response = sales_client.post(CHANGELIST, action(first, second, post="yes"), follow=True)

    assert "merge_contacts_action" not in response.content.decode()
    assert Contact.objects.count() == 2
