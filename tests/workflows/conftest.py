import pytest

from billing.models import Subscription
from contacts.models import Contact
from tests.factories import SourceFactory, set_guardrails


@pytest.fixture
def small_plan(db, account):
    """A small tier so savings show: 10 included, base 1000, blocks of 5 at 100 (minor units)."""
    subscription = Subscription.load()
    subscription.included_contacts = 10
    subscription.base_price = 1_000
    subscription.block_size = 5
    subscription.block_price = 100
    subscription.save()
    set_guardrails(operation_limit=None, hard_cap=None)
    return subscription


@pytest.fixture
def make_contacts(db):
    """`make(n, **fields)`: n new non-marketing contacts, as a queryset."""
    source = SourceFactory(name="Hygiene test", kind="import")
    counter = iter(range(10**9))

    def make(count, **fields):
        emails = [f"h{next(counter)}@example.com" for _ in range(count)]
        Contact.objects.bulk_create(Contact(email=e, source=source, **fields) for e in emails)
        return Contact.objects.filter(email__in=emails)

    return make
