"""Ad audiences (marketing contacts only) and static lists: set-based membership changes."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contacts.models import Contact
from contacts.outreach.models import (
    AdAudience,
    AdAudienceMembership,
    ContactList,
)
from contacts.outreach.services import (
    ad_audience_add,
    ad_audience_remove,
    contact_list_add,
)
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing
from tests.factories import ContactFactory

pytestmark = pytest.mark.usefixtures("account")

SOURCE = StatusSource("manual", name="test")


@pytest.fixture
def people():
    """Three marketing contacts (one unsubscribed, one bounced) and two non-marketing."""
    contacts = {
        "m1": ContactFactory(email="m1@example.com"),
        "m_unsub": ContactFactory(email="m-unsub@example.com", unsubscribed=True),
        "m_bounced": ContactFactory(email="m-bounced@example.com", hard_bounced=True),
        "n1": ContactFactory(email="n1@example.com"),
        "n2": ContactFactory(email="n2@example.com"),
    }
    contacts_set_marketing(
        contacts=[contacts[k].pk for k in ("m1", "m_unsub", "m_bounced")], source=SOURCE
    )
    return contacts


@pytest.fixture
def audience(db):
    return AdAudience.objects.create(name="Retargeting", platform="facebook")


def members(audience) -> list[str]:
    return sorted(
        AdAudienceMembership.objects.filter(audience=audience).values_list(
            "contact__email", flat=True
        )
    )


def test_add_accepts_marketing_contacts_only_and_counts_the_refused(people, audience):
    change = ad_audience_add(audience=audience, contacts=Contact.objects.all())

    assert (change.matched, change.added, change.already_member, change.refused_non_marketing) == (
        5,
        3,
        0,
        2,
    )
    # unsubscribed and bounced marketing contacts may be in audiences (DESIGN §1.1)
    assert members(audience) == ["m-bounced@example.com", "m-unsub@example.com", "m1@example.com"]


def test_adding_again_changes_nothing(people, audience):
    ad_audience_add(audience=audience, contacts=Contact.objects.all())

    change = ad_audience_add(audience=audience, contacts=[c.pk for c in people.values()])

    assert (change.added, change.already_member, change.refused_non_marketing) == (0, 3, 2)
    assert AdAudienceMembership.objects.count() == 3


def test_preview_counts_and_writes_nothing(people, audience):
    ad_audience_add(audience=audience, contacts=[people["m1"].pk])

    change = ad_audience_add(audience=audience, contacts=Contact.objects.all(), preview=True)

    assert (change.preview, change.added, change.already_member, change.refused_non_marketing) == (
        True,
        2,
        1,
        2,
    )
    assert members(audience) == ["m1@example.com"]


def test_remove_takes_out_members_of_any_status(people, audience):
    ad_audience_add(audience=audience, contacts=Contact.objects.all())

    change = ad_audience_remove(audience=audience, contacts=[people["m1"].pk, people["n1"].pk])

    assert (change.matched, change.removed, change.not_member) == (2, 1, 1)
    assert members(audience) == ["m-bounced@example.com", "m-unsub@example.com"]


def test_membership_changes_are_set_based(people, audience):
    # A fixed number of statements whatever the number of contacts: aggregate, INSERT … SELECT
    with CaptureQueriesContext(connection) as few:
        ad_audience_add(
            audience=audience, contacts=Contact.objects.filter(pk__in=[people["m1"].pk])
        )
    for i in range(20):
        ContactFactory(email=f"more{i}@example.com")
    contacts_set_marketing(contacts=Contact.objects.all(), source=SOURCE)
    with CaptureQueriesContext(connection) as many:
        change = ad_audience_add(audience=audience, contacts=Contact.objects.all())
    assert (change.added, change.already_member) == (24, 1)
    assert len(many) == len(few)


def test_lists_accept_any_contact(people):
    newsletter = ContactList.objects.create(name="Newsletter")

    change = contact_list_add(contact_list=newsletter, contacts=Contact.objects.all())

    assert (change.added, change.refused_non_marketing) == (5, 0)
    assert newsletter.members.count() == 5


def test_a_contact_leaves_its_ad_audiences_when_its_downgrade_takes_effect(audience):
    from contacts.status.services import (
        contacts_rollover,
        contacts_set_non_marketing,
    )
    from tests.conftest import at

    # Given two marketing contacts in an audience, one of them scheduled non-marketing
    stays, leaves = (
        ContactFactory(email="stays@example.com"),
        ContactFactory(email="leaves@example.com"),
    )
    contacts_set_marketing(contacts=[stays.pk, leaves.pk], source=SOURCE, at=at(2026, 11, 5))
    ad_audience_add(audience=audience, contacts=Contact.objects.all(), at=at(2026, 11, 5))
    contacts_set_non_marketing(contacts=leaves, source=SOURCE, at=at(2026, 11, 10))

    # While the downgrade is pending it is still marketing, and stays in the audience
    contacts_rollover(as_of=at(2026, 11, 30), at=at(2026, 11, 30))
    assert members(audience) == ["leaves@example.com", "stays@example.com"]

    # When the rollover applies it, the contact leaves the audience; the other stays
    contacts_rollover(as_of=at(2026, 12, 1), at=at(2026, 12, 1, 1))
    assert members(audience) == ["stays@example.com"]


def test_a_rollover_in_chunks_takes_each_chunks_contacts_out_of_their_audiences(
    audience, monkeypatch
):
    from contacts.status import sql
    from contacts.status.services import contacts_rollover, contacts_set_non_marketing
    from tests.conftest import at

    monkeypatch.setattr(sql, "STATUS_RANGE_BATCH", 1)  # SQLite: a chunk per contact id
    monkeypatch.setattr(sql, "STATUS_ID_BATCH", 2)  # PostgreSQL: two index entries a chunk
    people = [ContactFactory(email=f"p{i}@example.com") for i in range(4)]
    contacts_set_marketing(contacts=[p.pk for p in people], source=SOURCE, at=at(2026, 11, 5))
    ad_audience_add(audience=audience, contacts=Contact.objects.all(), at=at(2026, 11, 5))
    contacts_set_non_marketing(
        contacts=[p.pk for p in people[1:]], source=SOURCE, at=at(2026, 11, 10)
    )
    chunks = []

    contacts_rollover(
        as_of=at(2026, 12, 1), at=at(2026, 12, 1, 1), progress=lambda d, t: chunks.append(d)
    )

    assert len(chunks) >= 2
    assert members(audience) == ["p0@example.com"]
