"""Deleting contacts in the admin, one or the selected ones: through the status service's
delete (ledger row, live count), for whoever has contacts.delete_contact, taking the
contact's own rows (enrollments, events…) with it without their delete permission."""

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from contacts.engagement.models import EngagementEvent
from contacts.models import Contact
from contacts.status.models import PeriodUsage, StatusChange
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing
from tests.factories import ContactFactory
from workflows.models import Enrollment, RunTrigger
from workflows.runs import workflow_run_now
from workflows.services import workflow_create

CHANGELIST = reverse("admin:contacts_contact_changelist")


def delete_url(pk) -> str:
    return reverse("admin:contacts_contact_delete", args=[pk])


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def enrolled(account):
    """Two MQLs made marketing by a workflow (so enrolled in it), one with an event."""
    ann = ContactFactory(email="ann@example.com", lifecycle_stage="mql")
    bob = ContactFactory(email="bob@example.com", lifecycle_stage="mql")
    workflow = workflow_create(
        name="MQL definition",
        criteria={
            "filterGroups": [
                {"filters": [{"propertyName": "lifecycle_stage", "operator": "EQ", "value": "mql"}]}
            ]
        },
        actions=[{"type": "set_marketing"}],
        enabled=True,
    )
    workflow_run_now(workflow=workflow, trigger=RunTrigger.MANUAL)
    EngagementEvent.objects.create(
        contact=ann, type="email_open", occurred_at=timezone.now(), external_id="open-1"
    )
    assert Enrollment.objects.count() == 2
    return {"ann": ann, "bob": bob}


def live_count() -> int:
    return PeriodUsage.objects.get().live_count


@pytest.mark.parametrize("who", ["superuser", "marketing_ops"])
def test_deleting_an_enrolled_contact_works_and_goes_through_the_service(request, enrolled, who):
    client = logged_in(request.getfixturevalue(who))
    ann = enrolled["ann"]

    # The page lists what goes with the contact, and asks for no other permission
    page = client.get(delete_url(ann.pk))
    assert page.status_code == 200
    assert page.context["perms_lacking"] == set()
    assert dict(page.context["model_count"]) == {
        "contacts": 1,
        "enrollments": 1,
        "engagement events": 1,
    }
    response = client.post(delete_url(ann.pk), {"post": "yes"})

    assert response.status_code == 302
    assert not Contact.objects.filter(pk=ann.pk).exists()
    assert not Enrollment.objects.filter(contact_id=ann.pk).exists()
    assert not EngagementEvent.objects.filter(contact_id=ann.pk).exists()
    row = StatusChange.objects.get(contact_id=ann.pk, action="deleted")
    assert (row.source_type, row.delta) == ("deletion", -1)
    assert live_count() == 1


def test_bulk_delete_of_enrolled_contacts_confirms_then_goes_through_the_service(
    enrolled, marketing_ops
):
    client = logged_in(marketing_ops)
    ids = [str(enrolled["ann"].pk), str(enrolled["bob"].pk)]
    action = {"action": "delete_contacts_action", "_selected_action": ids}

    page = client.post(CHANGELIST, action)
    key = page.context["form"]["idempotency_key"].value()
    response = client.post(CHANGELIST, {**action, "post": "yes", "idempotency_key": key})

    assert page.status_code == 200
    assert (page.context["total"], page.context["marketing"]) == (2, 2)
    assert response.status_code == 302
    assert Contact.objects.count() == 0
    assert Enrollment.objects.count() == 0
    assert StatusChange.objects.filter(action="deleted").count() == 2
    assert live_count() == 0


def test_sales_can_neither_delete_nor_see_the_bulk_delete(enrolled, sales):
    client = logged_in(sales)
    ann = enrolled["ann"]
    before = (Contact.objects.count(), Enrollment.objects.count(), StatusChange.objects.count())

    single = client.post(delete_url(ann.pk), {"post": "yes"})
    bulk = client.post(
        CHANGELIST,
        {"action": "delete_contacts_action", "_selected_action": [str(ann.pk)], "post": "yes"},
    )
    listed = client.get(CHANGELIST)

    assert single.status_code == 403
    assert bulk.status_code == 302  # "No action selected": not offered to Sales
    choices = [name for name, _ in listed.context["action_form"].fields["action"].choices]
    assert "delete_contacts_action" not in choices
    after = (Contact.objects.count(), Enrollment.objects.count(), StatusChange.objects.count())
    assert after == before
    assert live_count() == 2


def test_deleting_a_plain_marketing_contact_still_writes_its_ledger_row(account, superuser):
    contact = ContactFactory(email="cy@example.com")
    contacts_set_marketing(contacts=contact, source=StatusSource("manual", name="t"))

    response = logged_in(superuser).post(delete_url(contact.pk), {"post": "yes"})

    assert response.status_code == 302
    assert StatusChange.objects.filter(contact_id=contact.pk, action="deleted").count() == 1
    assert live_count() == 0
