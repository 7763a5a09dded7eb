"""The merge service: the survivor's status, the counters against the ledger, retries,
the locked-source rule, and the rows that move."""

import itertools

import pytest

from contacts.merge.models import MergedContact
from contacts.merge.selectors import merge_survivor_of
from contacts.merge.services import MergeConflict, MergeError, MergeNotFound, contacts_merge
from contacts.models import Contact
from contacts.status.models import LedgerAction, StatusChange
from contacts.status.results import LockedSourceError, MarketingNotPermitted
from contacts.status.selectors import contact_status_history, ledger_replay, usage_current
from contacts.status.services import contacts_set_marketing, contacts_set_non_marketing
from crm.calendar import BillingCalendar
from tests.conftest import at
from tests.factories import ContactFactory, SourceFactory, UserFactory

NOV_5, NOV_6, NOV_10 = at(2026, 11, 5), at(2026, 11, 6), at(2026, 11, 10)
DEC_1 = at(2026, 12, 1)


def make(contact, status, manual):
    """Give a contact an effective status on NOV_10: non_marketing, pending or marketing."""
    if status in ("pending", "marketing"):
        contacts_set_marketing(contacts=contact, source=manual, at=NOV_5)
    if status == "pending":
        contacts_set_non_marketing(contacts=contact, source=manual, at=NOV_6)
    contact.refresh_from_db()
    return contact


def effective(contact) -> str:
    if contact.pending_from(NOV_10):
        return "pending"
    return "marketing" if contact.is_billable(NOV_10) else "non_marketing"


def books_balance():
    """The counters, the ledger's replay and a recount of the contacts all agree."""
    usage = usage_current(at=NOV_10)
    start, end = BillingCalendar.for_account().period_bounds(NOV_10)
    replay = ledger_replay(start=start, end=end)
    recount = Contact.objects.billable(NOV_10).count()
    assert replay.peak_count == usage.peak_count
    assert replay.closing_count == usage.live_count == recount
    return usage


STATUSES = ("non_marketing", "pending", "marketing")
# The survivor is marketing if either was; a pending downgrade survives only if both had one.
OUTCOMES = {
    ("non_marketing", "non_marketing"): "non_marketing",
    ("non_marketing", "pending"): "marketing",
    ("non_marketing", "marketing"): "marketing",
    ("pending", "non_marketing"): "marketing",
    ("pending", "pending"): "pending",
    ("pending", "marketing"): "marketing",
    ("marketing", "non_marketing"): "marketing",
    ("marketing", "pending"): "marketing",
    ("marketing", "marketing"): "marketing",
}


@pytest.mark.parametrize(("mine", "theirs"), list(itertools.product(STATUSES, STATUSES)))
def test_the_survivor_is_marketing_if_either_was_and_the_books_balance(
    account, manual, mine, theirs
):
    keep = make(ContactFactory(email="keep@example.com"), mine, manual)
    gone = make(ContactFactory(email="gone@example.com"), theirs, manual)
    before = books_balance()

    result = contacts_merge(survivor=keep, merged_away=gone, at=NOV_10)

    expected = OUTCOMES[mine, theirs]
    survivor = Contact.objects.get(pk=keep.pk)
    assert result.survivor.pk == keep.pk
    assert effective(survivor) == expected
    if expected == "pending":
        assert survivor.pending_from(NOV_10) == DEC_1
    assert not Contact.objects.filter(pk=gone.pk).exists()
    after = books_balance()
    billable_before = (mine != "non_marketing") + (theirs != "non_marketing")
    assert after.live_count == before.live_count - billable_before + (expected != "non_marketing")
    assert after.peak_count == before.peak_count
    # The next period opens with the survivor counted once, or not at all.
    start = ledger_replay(start=DEC_1, end=at(2027, 1, 1)).opening_count
    assert start == (expected == "marketing")


def test_the_ledger_names_the_merge_for_both_contacts(account, manual):
    keep = ContactFactory(email="keep@example.com")
    gone = make(ContactFactory(email="gone@example.com"), "marketing", manual)

    result = contacts_merge(survivor=keep, merged_away=gone, at=NOV_10)

    rows = StatusChange.objects.filter(source_type="merge").order_by("id")
    assert [(r.contact_id, r.action, r.delta) for r in rows] == [
        (gone.pk, LedgerAction.DELETED, -1),
        (keep.pk, LedgerAction.UPGRADE, 1),
    ]
    assert {r.source_id for r in rows} == {str(result.merge.pk)}
    assert rows[0].source_name == "Merged into keep@example.com"
    assert rows[1].source_name == "Merged with gone@example.com"
    # The survivor's history shows the merged-away contact's rows too.
    history = contact_status_history(contact_id=keep.pk)
    assert [(r.contact_id, r.action) for r in history] == [
        (keep.pk, LedgerAction.UPGRADE),
        (gone.pk, LedgerAction.DELETED),
        (gone.pk, LedgerAction.UPGRADE),
    ]


def test_a_merge_is_idempotent(account, manual):
    keep = ContactFactory(email="keep@example.com")
    gone = make(ContactFactory(email="gone@example.com"), "marketing", manual)
    first = contacts_merge(survivor=keep, merged_away=gone, idempotency_key="k1", at=NOV_10)
    rows = StatusChange.objects.count()

    again = contacts_merge(survivor=keep.pk, merged_away=gone.pk, at=NOV_10)
    by_key = contacts_merge(survivor=keep.pk, merged_away=gone.pk, idempotency_key="k1")

    assert (again.replayed, by_key.replayed) == (True, True)
    assert again.survivor.pk == by_key.survivor.pk == first.survivor.pk == keep.pk
    assert again.merge.pk == first.merge.pk
    assert StatusChange.objects.count() == rows
    assert MergedContact.objects.count() == 1
    books_balance()


def test_conflicting_and_unknown_merges_are_refused_without_writing(account, manual):
    keep, gone, other = ContactFactory.create_batch(3)
    contacts_merge(survivor=keep, merged_away=gone, idempotency_key="k1", at=NOV_10)
    rows = StatusChange.objects.count()

    with pytest.raises(MergeConflict, match="itself"):
        contacts_merge(survivor=keep, merged_away=keep)
    with pytest.raises(MergeConflict, match=f"already merged into contact {keep.pk}"):
        contacts_merge(survivor=other, merged_away=gone)
    with pytest.raises(MergeConflict, match=f"merged into contact {keep.pk}; merge with that"):
        contacts_merge(survivor=gone, merged_away=other)
    with pytest.raises(MergeConflict, match="idempotency key"):
        contacts_merge(survivor=keep, merged_away=other, idempotency_key="k1")
    with pytest.raises(MergeNotFound, match="999999"):
        contacts_merge(survivor=keep, merged_away=999999)
    with pytest.raises(MergeError, match="cannot be chosen"):
        contacts_merge(survivor=keep, merged_away=other, values={"lead_score": 5})

    assert Contact.objects.filter(pk=other.pk).exists()
    assert StatusChange.objects.count() == rows
    assert MergedContact.objects.count() == 1


def test_a_locked_source_survivor_cannot_become_marketing_through_a_merge(account, manual):
    phone = SourceFactory(name="Phone app", kind="mobile_app")
    locked = ContactFactory(email="app@example.com", source=phone)
    form = SourceFactory(name="Form", kind="form")
    marketing = make(ContactFactory(email="form@example.com", source=form), "marketing", manual)
    rows = StatusChange.objects.count()

    with pytest.raises(LockedSourceError, match="locked source"):
        contacts_merge(survivor=locked, merged_away=marketing, at=NOV_10)
    assert Contact.objects.filter(pk=marketing.pk).exists()
    assert StatusChange.objects.count() == rows

    # Keeping the other contact's source merges it.
    result = contacts_merge(
        survivor=locked, merged_away=marketing, values={"source": form.pk}, at=NOV_10
    )
    assert result.survivor.source_id == form.pk
    assert result.survivor.is_billable(NOV_10)
    books_balance()


def test_making_the_survivor_marketing_needs_the_status_permission(account, manual):
    keep = ContactFactory(email="keep@example.com")
    gone = make(ContactFactory(email="gone@example.com"), "marketing", manual)
    sales = UserFactory(username="sales-merge", groups=["Sales"])

    with pytest.raises(MarketingNotPermitted, match="change_marketing_status"):
        contacts_merge(survivor=keep, merged_away=gone, by=sales, at=NOV_10)
    assert Contact.objects.filter(pk=gone.pk).exists()

    # The other way round nothing changes status: the permission is not needed.
    result = contacts_merge(survivor=gone, merged_away=keep, by=sales, at=NOV_10)
    assert result.survivor.is_billable(NOV_10)


def test_fields_are_chosen_and_blanks_filled(account, manual):
    keep = ContactFactory(email="keep@example.com", phone="", company="Keep Ltd", lead_score=3)
    gone = ContactFactory(
        email="gone@example.com",
        phone="+44 1",
        company="Gone Ltd",
        unsubscribed=True,
        lead_score=4,
        last_engaged_at=NOV_6,
    )

    result = contacts_merge(
        survivor=keep, merged_away=gone, values={"email": "gone@example.com"}, at=NOV_10
    )

    survivor = Contact.objects.get(pk=keep.pk)
    assert (survivor.email, survivor.phone, survivor.company) == (
        "gone@example.com",
        "+44 1",
        "Keep Ltd",
    )
    assert (survivor.unsubscribed, survivor.lead_score, survivor.last_engaged_at) == (
        True,
        7,
        NOV_6,
    )
    assert result.merge.values["email"] == "gone@example.com"
    assert merge_survivor_of(contact_id=gone.pk) == keep.pk


LEADS = {
    "filterGroups": [
        {"filters": [{"propertyName": "lifecycle_stage", "operator": "EQ", "value": "lead"}]}
    ]
}


def test_rows_move_to_the_survivor_and_duplicates_are_dropped(account, manual):
    from contacts.engagement.models import EngagementEvent
    from contacts.outreach.models import (
        AdAudience,
        AdAudienceMembership,
        ContactList,
        ContactListMembership,
    )
    from workflows.models import Enrollment, RotationMember, RotationPlan
    from workflows.services import workflow_create

    keep = ContactFactory(email="keep@example.com")
    gone = make(ContactFactory(email="gone@example.com"), "marketing", manual)
    for n, contact in enumerate((keep, gone, gone)):
        EngagementEvent.objects.create(
            contact=contact, type="email_open", occurred_at=NOV_6, external_id=f"e{n}"
        )
    shared, theirs = ContactList.objects.create(name="Shared"), ContactList.objects.create(name="B")
    for contact_list, contact in ((shared, keep), (shared, gone), (theirs, gone)):
        ContactListMembership.objects.create(
            contact_list=contact_list, contact=contact, added_at=NOV_6
        )
    audience = AdAudience.objects.create(name="Lookalikes", platform="facebook")
    AdAudienceMembership.objects.create(audience=audience, contact=gone, added_at=NOV_6)
    both = workflow_create(name="Both", criteria=LEADS, actions=[{"type": "set_marketing"}])
    only = workflow_create(name="Only", criteria=LEADS, actions=[{"type": "set_marketing"}])
    Enrollment.objects.create(
        workflow=both, contact=keep, enrolled_at=NOV_6, last_matched_at=NOV_6, exited_at=NOV_6
    )
    Enrollment.objects.create(workflow=both, contact=gone, enrolled_at=NOV_5, last_matched_at=NOV_5)
    Enrollment.objects.create(workflow=only, contact=gone, enrolled_at=NOV_5, last_matched_at=NOV_5)
    plan = RotationPlan.objects.create(name="Pool", criteria=LEADS, size=5, rotate_per_period=1)
    RotationMember.objects.create(plan=plan, contact=gone, joined_at=NOV_5)

    result = contacts_merge(survivor=keep, merged_away=gone, at=NOV_10)

    assert EngagementEvent.objects.filter(contact=keep).count() == 3
    assert sorted(
        ContactListMembership.objects.filter(contact=keep).values_list(
            "contact_list__name", flat=True
        )
    ) == ["B", "Shared"]
    assert ContactListMembership.objects.count() == 2
    assert AdAudienceMembership.objects.filter(contact=keep, audience=audience).exists()
    enrollments = {e.workflow_id: e for e in Enrollment.objects.filter(contact=keep)}
    assert set(enrollments) == {both.pk, only.pk}
    merged = enrollments[both.pk]
    assert (merged.enrolled_at, merged.exited_at, merged.times) == (NOV_5, None, 2)
    assert RotationMember.objects.get().contact_id == keep.pk
    assert result.merge.moved == {
        "engagement_events": 2,
        "list_memberships": 1,
        "audience_memberships": 1,
        "enrollments": 1,
        "rotation_members": 1,
    }


def test_a_non_marketing_outcome_leaves_ad_audiences(account, manual):
    from contacts.outreach.models import AdAudience, AdAudienceMembership

    keep, gone = ContactFactory.create_batch(2)
    audience = AdAudience.objects.create(name="Lookalikes", platform="facebook")
    # A membership left from before the contact's downgrade was applied.
    AdAudienceMembership.objects.create(audience=audience, contact=gone, added_at=NOV_6)

    contacts_merge(survivor=keep, merged_away=gone, at=NOV_10)

    assert not AdAudienceMembership.objects.exists()
