"""The contacts API when another request deletes the contact in the middle of this one."""

from rest_framework.test import APIClient

from contacts.api import views
from contacts.models import Contact
from contacts.status.selectors import usage_current
from contacts.status.services import contacts_delete
from tests.factories import ContactFactory, UserFactory


def test_a_status_change_on_a_contact_deleted_meanwhile_is_404(account, monkeypatch):
    # Given a contact another request deletes while this one changes its status
    contact = ContactFactory()
    change = views._change_status

    def deleted_first(**kwargs):
        contacts_delete(contacts=[contact.pk])
        return change(**kwargs)

    monkeypatch.setattr(views, "_change_status", deleted_first)
    client = APIClient()
    client.force_authenticate(UserFactory(username="ops", is_superuser=True))

    # When it asks for marketing
    response = client.post(
        f"/api/contacts/{contact.pk}/marketing-status/", {"status": "marketing"}, format="json"
    )

    # Then the answer says the contact is gone, and nothing was counted for it
    assert response.status_code == 404
    assert response.data == {
        "detail": "This contact was deleted while its status was being changed."
    }
    assert not Contact.objects.filter(pk=contact.pk).exists()
    assert usage_current().live_count == 0


def test_an_edit_of_a_contact_deleted_meanwhile_is_404(account, monkeypatch):
    # Given a contact another request deletes while this one edits it
    contact = ContactFactory(company="Before")
    update = views.contact_update

    def deleted_first(**kwargs):
        contacts_delete(contacts=[contact.pk])
        return update(**kwargs)

    monkeypatch.setattr(views, "contact_update", deleted_first)
    client = APIClient()
    client.force_authenticate(UserFactory(username="ops", is_superuser=True))

    # When it changes the company
    response = client.patch(f"/api/contacts/{contact.pk}/", {"company": "After"}, format="json")

    # Then the answer says the contact is gone, and it stays gone
    assert response.status_code == 404
    assert response.data == {"detail": "This contact was deleted while it was being changed."}
    assert not Contact.objects.filter(pk=contact.pk).exists()
