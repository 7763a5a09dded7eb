"""The one creation policy (DESIGN §1.3): every source kind's default, the locks, and that
admin and API create go through it."""

import pytest
from rest_framework.test import APIClient

from contacts.intake.services import contact_intake
from contacts.models import (
    LOCKED_KINDS,
    Contact,
    SourceKind,
    StatusSourceType,
)
from contacts.services import (
    contact_create,
    contacts_creation_policy,
)
from contacts.status.models import StatusChange
from contacts.status.results import (
    LockedSourceError,
    StatusSource,
)
from tests.factories import SourceFactory

KIND_DEFAULTS = {
    SourceKind.FORM: True,
    SourceKind.EXTERNAL_FORM: True,
    SourceKind.ADS: True,
    SourceKind.IMPORT: False,
    SourceKind.CHATFLOW: False,
    SourceKind.INTEGRATION: False,
    SourceKind.MANUAL: False,
    **{kind: False for kind in LOCKED_KINDS},
}


def test_every_kind_has_a_default():
    assert set(KIND_DEFAULTS) == set(SourceKind.values)


@pytest.mark.parametrize(("kind", "marketing"), sorted(KIND_DEFAULTS.items()))
def test_a_new_contact_takes_its_source_kinds_default(db, kind, marketing):
    # Given a source of the kind, with the kind's default
    source = SourceFactory(name=f"src {kind}", kind=kind)

    # When the policy decides without a request or a channel setting
    decision = contacts_creation_policy(source=source)

    # Then the kind's default applies and the source is the reason
    assert decision.marketing is marketing
    assert decision.status_source == StatusSource(
        StatusSourceType.CREATION, id=str(source.pk), name=source.name
    )


@pytest.mark.parametrize("kind", sorted(LOCKED_KINDS))
def test_locked_kinds_refuse_a_request_for_marketing(db, kind):
    source = SourceFactory(name=f"locked {kind}", kind=kind)

    with pytest.raises(LockedSourceError) as error:
        contacts_creation_policy(source=source, requested_marketing=True)

    assert "that kind of source is locked" in str(error.value)


@pytest.mark.parametrize("kind", sorted(LOCKED_KINDS))
def test_locked_kinds_ignore_a_channel_setting(db, kind):
    source = SourceFactory(name=f"locked {kind}", kind=kind)
    channel = StatusSource(StatusSourceType.INTEGRATION, id="3", name="App")

    decision = contacts_creation_policy(source=source, channel_marketing=True, channel=channel)

    assert decision.marketing is False
    assert "locked" in decision.reason


def test_a_request_wins_over_the_channel_and_names_the_requester(db):
    source = SourceFactory(name="Web", kind=SourceKind.FORM)
    channel = StatusSource(StatusSourceType.FORM, id="1", name="Newsletter")
    requester = StatusSource(StatusSourceType.IMPORT, id="9", name="March list")

    decision = contacts_creation_policy(
        source=source,
        requested_marketing=False,
        channel_marketing=True,
        channel=channel,
        requester=requester,
    )
    marketing = contacts_creation_policy(
        source=source, requested_marketing=True, channel_marketing=False, requester=requester
    )

    assert (decision.marketing, decision.status_source) == (False, requester)
    assert (marketing.marketing, marketing.status_source) == (True, requester)


def test_the_channel_setting_wins_over_the_source_default_and_names_the_channel(db):
    source = SourceFactory(name="Bot", kind=SourceKind.CHATFLOW)  # default non-marketing
    channel = StatusSource(StatusSourceType.CHATFLOW, id="4", name="Pricing bot")

    decision = contacts_creation_policy(source=source, channel_marketing=True, channel=channel)

    assert (decision.marketing, decision.status_source) == (True, channel)
    assert decision.reason == "“Pricing bot” creates marketing contacts."


@pytest.mark.parametrize("kind", sorted(LOCKED_KINDS))
def test_contact_create_from_a_locked_source_is_non_marketing_and_refuses_marketing(account, kind):
    source = SourceFactory(name=f"locked {kind}", kind=kind)

    with pytest.raises(LockedSourceError):
        contact_create(email="a@example.com", source=source, marketing=True)
    contact = contact_create(email="b@example.com", source=source)

    assert list(Contact.objects.values_list("email", "marketing_status")) == [
        ("b@example.com", "non_marketing")
    ]
    assert contact.marketing_reason_type == "creation"
    assert StatusChange.objects.count() == 0


@pytest.mark.parametrize("kind", sorted(LOCKED_KINDS))
def test_intake_from_a_locked_source_never_creates_marketing(account, kind):
    source = SourceFactory(name=f"locked {kind}", kind=kind)
    channel = StatusSource(StatusSourceType.INTEGRATION, id="1", name="Inbox sync")

    result = contact_intake(
        email="c@example.com", source=source, channel=channel, channel_marketing=True
    )

    assert (result.created, result.contact.marketing_status) == (True, "non_marketing")
    assert StatusChange.objects.count() == 0


@pytest.mark.parametrize("kind", sorted(LOCKED_KINDS))
def test_the_api_refuses_marketing_from_a_locked_source_with_400_even_without_the_permission(
    account, sales, kind
):
    # Given a user who may not choose the status at all, asking for marketing on a locked source
    client = APIClient()
    client.force_authenticate(sales)
    source = SourceFactory(name=f"locked {kind}", kind=kind)

    response = client.post(
        "/api/contacts/",
        {"email": "m@example.com", "source": source.pk, "marketing": True},
        format="json",
    )

    # Then the lock is the answer (400), not the permission, and nothing is stored
    assert response.status_code == 400
    assert "that kind of source is locked" in response.data["marketing"][0]
    assert Contact.objects.count() == 0


def test_the_admin_add_form_uses_the_policy_message(account, marketing_ops):
    from django.test import Client

    client = Client()
    client.force_login(marketing_ops)
    source = SourceFactory(name="Team inbox", kind=SourceKind.TEAM_INBOX)

    response = client.post(
        "/admin/contacts/contact/add/",
        {
            "email": "t@example.com",
            "source": str(source.pk),
            "marketing": "on",
            "lifecycle_stage": "lead",
            "contact_type": "prospect",
        },
    )

    assert response.status_code == 200
    assert (
        "Contacts from “Team inbox” (Team inbox email) are always non-marketing: that kind of "
        "source is locked." in response.content.decode()
    )
    assert Contact.objects.count() == 0
