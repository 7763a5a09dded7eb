from contacts.models import Contact
from contacts.status.models import (
    PeriodUsage,
    StatusChange,
)
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from tests.conftest import at


def test_upgrade_then_downgrade(account, contact_factory, manual):
    contacts = contact_factory.create_batch(3)
    result = contacts_set_marketing(
        contacts=Contact.objects.all(), source=manual, at=at(2026, 11, 5)
    )
    assert (result.matched, result.changed, result.already) == (3, 3, 0)
    result = contacts_set_non_marketing(
        contacts=[contacts[0].pk], source=manual, at=at(2026, 11, 6)
    )
    assert result.scheduled == 1
    assert result.effective_from == at(2026, 12, 1)
    usage = PeriodUsage.objects.get()
    assert (usage.live_count, usage.peak_count, usage.scheduled_downgrades) == (3, 3, 1)
    assert StatusChange.objects.count() == 4


def test_roles_exist_with_their_permissions(db):
    from django.contrib.auth.models import Group

    ops = Group.objects.get(name="Marketing ops")
    sales = Group.objects.get(name="Sales")
    auditor = Group.objects.get(name="Auditor")
    assert ops.permissions.filter(codename="change_marketing_status").exists()
    assert not sales.permissions.filter(codename="change_marketing_status").exists()
    assert auditor.permissions.filter(codename="view_statuschange").exists()
    assert not auditor.permissions.exclude(codename__startswith="view_").exists()
