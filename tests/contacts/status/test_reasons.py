"""Why a status changed, as every screen says it (contacts.status.reasons)."""

import pytest

from contacts.status.reasons import status_reason_text
from tests.factories import UserFactory


@pytest.mark.parametrize(
    "source, actor, text",
    [
        (("seed", "", "Demo data"), None, "Demo data"),
        (("bulk_action", "", "Admin bulk action"), "admin", "Bulk change in the admin by admin"),
        (("bulk_action", "", "Admin bulk action"), None, "Bulk change in the admin"),
        (("manual", "1", "admin"), None, "Changed on the contact page by admin"),
        (("api", "4", "zapier"), None, "Changed through the API by zapier"),
        (("workflow", "7", "MQL definition"), None, "Workflow “MQL definition”"),
        (("workflow", "7", ""), None, "Workflow #7"),
        (("import", "3", "fair.csv"), None, "Import “fair.csv”"),
        (("form", "external:x", "External form “signup”"), None, "External form “signup”"),
        (("creation", "2", "Website form"), None, "Default of its source “Website form”"),
        (
            ("rollover", "", "Period rollover"),
            None,
            "Pending change applied at the start of the period",
        ),
        (("deletion", "", "Admin"), "ann", "Deleted by ann"),
    ],
)
def test_each_source_reads_as_a_phrase(source, actor, text):
    assert status_reason_text(*source, actor) == text


def test_the_ledger_list_says_why_in_words(db, account):
    from django.test import Client

    from contacts.status.results import StatusSource
    from contacts.status.services import contacts_set_marketing
    from tests.factories import ContactFactory

    root = UserFactory(username="root", is_superuser=True, is_staff=True)
    contact = ContactFactory(email="ann@example.com")
    contacts_set_marketing(
        contacts=contact, source=StatusSource("workflow", id="7", name="MQL definition"), actor=None
    )
    client = Client()
    client.force_login(root)

    html = client.get("/admin/contacts/statuschange/").content.decode()

    assert '<td class="field-reason_display">Workflow “MQL definition”</td>' in html
    assert "1 status ledger row" in html
