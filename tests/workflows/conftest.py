import pytest

from billing.models import Subscription
from contacts.models import Contact
from contacts.outreach.services import marketing_email_create
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


@pytest.fixture
def welcome(db):
    """A marketing email to the MQLs, for the runs that send one."""
    return marketing_email_create(
        name="Welcome",
        subject="Hi",
        body="Hello {first_name} {unsubscribe_url}",
        audience_filter={"lifecycle_stage": "mql"},
    )
