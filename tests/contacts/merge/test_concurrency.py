"""Merges at once, on PostgreSQL: the lock order keeps them from deadlocking or merging a
contact twice."""

import pytest
from django.utils import timezone

from contacts.merge.models import MergedContact
from contacts.merge.services import MergeConflict, contacts_merge
from contacts.models import Contact
from contacts.status.results import StatusSource
from contacts.status.selectors import ledger_replay, usage_current
from contacts.status.services import contacts_set_marketing
from crm.calendar import BillingCalendar
from tests.concurrency import run_together
from tests.factories import ContactFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def attempt(**kwargs):
    try:
        return contacts_merge(**kwargs)
    except MergeConflict as conflict:
        return conflict


def test_merges_at_once_merge_each_contact_once_and_the_books_balance(account):
    a, b, c = ContactFactory.create_batch(3)
    contacts_set_marketing(contacts=[a.pk, b.pk, c.pk], source=StatusSource("manual"))

    # The same merge twice, and the crossed merge (b into a, a into b), at once.
    results = run_together(
        lambda: attempt(survivor=a.pk, merged_away=b.pk),
        lambda: attempt(survivor=a.pk, merged_away=b.pk),
        lambda: attempt(survivor=b.pk, merged_away=a.pk),
        lambda: attempt(survivor=c.pk, merged_away=a.pk),
    )

    # Exactly one contact of the three remains per merge that ran; none was merged twice.
    merges = list(MergedContact.objects.values_list("merged_id", "survivor_id"))
    assert len({merged for merged, _ in merges}) == len(merges) >= 1
    remaining = Contact.objects.count()
    assert remaining == 3 - len(merges)
    assert all(r is not None for r in results)
    now = timezone.now()
    usage = usage_current(at=now)
    start, end = BillingCalendar.for_account().period_bounds(now)
    assert usage.live_count == Contact.objects.billable(now).count() == remaining
    assert ledger_replay(start=start, end=end).peak_count == usage.peak_count == 3
