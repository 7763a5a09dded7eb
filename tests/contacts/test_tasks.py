from contacts.models import Contact
from contacts.status.models import StatusChange
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from contacts.tasks import apply_due_downgrades
from tests.conftest import at


def test_apply_due_downgrades_rolls_over_what_is_due(account, contact_factory, manual):
    contact = contact_factory()
    contacts_set_marketing(contacts=contact, source=manual, at=at(2025, 1, 5))
    contacts_set_non_marketing(contacts=contact, source=manual, at=at(2025, 1, 6))

    result = apply_due_downgrades.delay().get()

    assert result["applied"] == 1
    assert Contact.objects.get().marketing_status == "non_marketing"
    assert StatusChange.objects.filter(action="rollover").count() == 1
    assert apply_due_downgrades.delay().get()["applied"] == 0
