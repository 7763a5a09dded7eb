import pytest

from billing.models import Subscription
from contacts.models import Contact
from tests.factories import SourceFactory


@pytest.fixture
def subscription(db):
    """EXAMPLES §2: 2,000 included, base 80000, blocks of 5,000 at 22500."""
    subscription = Subscription.load()
    subscription.included_contacts = 2_000
    subscription.base_price = 80_000
    subscription.block_size = 5_000
    subscription.block_price = 22_500
    subscription.alert_recipients = "billing@example.com, cfo@example.com"
    subscription.save()
    return subscription


@pytest.fixture
def make_contacts(db):
    source = SourceFactory(name="Bulk", kind="import")
    counter = iter(range(10**9))

    def make(count):
        emails = [f"b{next(counter)}@example.com" for _ in range(count)]
        Contact.objects.bulk_create(Contact(email=e, source=source) for e in emails)
        return Contact.objects.filter(email__in=emails)

    return make
