"""The contacts admin: deleting, adding and editing contacts; the ledger, sources and singletons."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing.models import Subscription
from contacts.models import (
    Contact,
    Source,
)
from contacts.status.models import (
    PendingApproval,
    PeriodUsage,
    StatusChange,
    StatusChangeRequest,
)
from contacts.status.services import (
    contacts_set_marketing,
)
from crm.models import Account
from tests.contacts.admin.support import (
    ADD,
    CHANGELIST,
    TEST_SOURCE,
    M,
    N,
    change_url,
    messages_of,
    usage,
)
from tests.factories import SourceFactory, set_guardrails

# --- deletion -----------------------------------------------------------------------


def test_delete_goes_through_the_service(ops_client, marketing_ops, people):
    bob = people["bob"]
    assert usage() == (2, 2)
    page = ops_client.get(reverse("admin:contacts_contact_delete", args=[bob.pk]))
    assert "is a marketing contact. Deleting it lowers the live count" in page.content.decode()
    response = ops_client.post(
        reverse("admin:contacts_contact_delete", args=[bob.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not Contact.objects.filter(pk=bob.pk).exists()
    row = StatusChange.objects.get(contact_id=bob.pk, action="deleted")
    assert (row.from_status, row.to_status, row.delta, row.actor_id) == (
        M,
        "none",
        -1,
        marketing_ops.pk,
    )
    assert usage() == (1, 2)  # live lowered at once, the peak stays


def test_sales_cannot_delete(sales_client, people):
    response = sales_client.post(
        reverse("admin:contacts_contact_delete", args=[people["bob"].pk]), {"post": "yes"}
    )
    assert response.status_code == 403
    assert Contact.objects.filter(pk=people["bob"].pk).exists()


# --- adding and editing ---------------------------------------------------------------


def add_data(**overrides) -> dict:
    data = {
        "email": "New.Person@Example.com",
        "first_name": "New",
        "last_name": "Person",
        "company": "",
        "phone": "",
        "source": "",
        "lifecycle_stage": "lead",
        "lead_status": "",
        "contact_type": "prospect",
        "_save": "Save",
    }
    data.update(overrides)
    return data


def test_add_with_a_locked_source_and_marketing_is_refused(ops_client, account):
    mobile = SourceFactory(name="Mobile app", kind="mobile_app")
    response = ops_client.post(ADD, add_data(source=str(mobile.pk), marketing="on"))
    assert response.status_code == 200
    assert "are always non-marketing: that kind of source is locked." in response.content.decode()
    assert Contact.objects.count() == 0
    assert StatusChange.objects.count() == 0


def test_add_as_marketing_by_a_permitted_user(ops_client, marketing_ops, account):
    manual = SourceFactory(name="Manual", kind="manual")
    response = ops_client.post(ADD, add_data(source=str(manual.pk), marketing="on"))
    assert response.status_code == 302
    contact = Contact.objects.get()
    assert contact.email == "new.person@example.com"
    assert (contact.marketing_status, contact.source_id) == (M, manual.pk)
    row = StatusChange.objects.get()
    assert (row.contact_id, row.action, row.source_type, row.actor_id) == (
        contact.pk,
        "upgrade",
        "manual",
        marketing_ops.pk,
    )
    assert usage() == (1, 1)
    assert response["Location"] == CHANGELIST


def test_add_as_marketing_past_the_hard_cap_stores_the_contact_and_holds_it(ops_client, account):
    set_guardrails(hard_cap=0)
    manual = SourceFactory(name="Manual", kind="manual")

    response = ops_client.post(ADD, add_data(source=str(manual.pk), marketing="on"), follow=True)

    contact = Contact.objects.get()
    assert (contact.marketing_status, contact.marketing_reason_type) == (N, "manual")
    assert not StatusChange.objects.exists()
    approval = PendingApproval.objects.get()
    assert approval.contact_ids == [contact.pk]
    assert any(
        m.startswith("The contact was created non-marketing. Waiting for approval")
        for m in messages_of(response)
    )


def test_add_without_a_source_is_created_by_hand_and_non_marketing(ops_client, account):
    response = ops_client.post(ADD, add_data())
    assert response.status_code == 302
    contact = Contact.objects.get()
    assert (contact.marketing_status, contact.source.name, contact.source.kind) == (
        N,
        "Created by hand",
        "manual",
    )
    assert StatusChange.objects.count() == 0


def test_add_by_users_without_the_permission_is_non_marketing_whatever_the_source(
    sales_client, account
):
    form = SourceFactory(name="Website form", kind="form")
    manual = SourceFactory(name="Manual", kind="manual")
    page = sales_client.get(ADD)
    assert 'name="marketing"' not in page.content.decode()

    # Ticking "marketing" without the permission is ignored: there is no such field.
    sales_client.post(ADD, add_data(email="a@x.com", source=str(manual.pk), marketing="on"))
    assert Contact.objects.get(email="a@x.com").marketing_status == N

    # A source whose default is marketing does not make it marketing either (DESIGN §1.3).
    sales_client.post(ADD, add_data(email="b@x.com", source=str(form.pk)))
    created = Contact.objects.get(email="b@x.com")
    assert (created.marketing_status, created.source_id) == (N, form.pk)
    assert StatusChange.objects.count() == 0


def test_add_refuses_a_duplicate_email_in_another_case(ops_client, people):
    response = ops_client.post(ADD, add_data(email="ANN@example.com"))
    assert response.status_code == 200
    assert "Contact with this Email already exists." in response.content.decode()
    assert Contact.objects.count() == 4


def test_edit_changes_ordinary_fields_only(ops_client, people):
    bob = people["bob"]
    data = add_data(
        email="Bob@Acme.com",
        first_name="Robert",
        last_name="",
        company="Acme",
        lifecycle_stage="customer",
        marketing_status="non_marketing",  # not a form field: ignored
    )
    del data["source"]
    response = ops_client.post(change_url(bob.pk), data)
    assert response.status_code == 302
    bob.refresh_from_db()
    assert (bob.email, bob.first_name, bob.lifecycle_stage) == (
        "bob@acme.com",
        "Robert",
        "customer",
    )
    assert (bob.marketing_status, bob.marketing_until) == (M, None)


# --- the ledger, requests, counters --------------------------------------------------


def test_ledger_admin_is_read_only_even_for_superusers(super_client, people):
    row = StatusChange.objects.first()
    assert super_client.get(reverse("admin:contacts_statuschange_add")).status_code == 403
    view = super_client.get(reverse("admin:contacts_statuschange_change", args=[row.pk]))
    assert view.status_code == 200
    assert 'type="submit"' not in view.content.decode().split('id="statuschange_form"')[1]
    changed = super_client.post(
        reverse("admin:contacts_statuschange_change", args=[row.pk]), {"delta": "0"}
    )
    assert changed.status_code == 403
    deleted = super_client.post(
        reverse("admin:contacts_statuschange_delete", args=[row.pk]), {"post": "yes"}
    )
    assert deleted.status_code == 403
    row_after = StatusChange.objects.get(pk=row.pk)
    assert (row_after.delta, row_after.action) == (row.delta, row.action)


def test_ledger_changelist_links_existing_contacts(super_client, people):
    bob = people["bob"]
    contacts_set_marketing(contacts=[people["dan"].pk], source=TEST_SOURCE)
    from contacts.status.services import contacts_delete

    contacts_delete(contacts=[people["dan"].pk])
    with CaptureQueriesContext(connection) as queries:
        response = super_client.get(
            reverse("admin:contacts_statuschange_changelist") + "?action__exact=upgrade"
        )
    assert response.status_code == 200
    html = response.content.decode()
    assert f'<a href="{change_url(bob.pk)}">{bob.pk}</a>' in html
    assert f"{people['dan'].pk} <span class='quiet'>(deleted)</span>" in html
    counts = [
        q["sql"]
        for q in queries.captured_queries
        if "COUNT(" in q["sql"].upper() and "contacts_statuschange" in q["sql"]
    ]
    assert counts and all("LIMIT 10001" in sql for sql in counts)
    searched = super_client.get(reverse("admin:contacts_statuschange_changelist") + f"?q={bob.pk}")
    assert {row.contact_id for row in searched.context["cl"].result_list} == {bob.pk}


@pytest.mark.parametrize("model", ["statuschangerequest", "periodusage"])
def test_requests_and_counters_are_read_only(super_client, people, model):
    changelist = super_client.get(reverse(f"admin:contacts_{model}_changelist"))
    assert changelist.status_code == 200
    assert super_client.get(reverse(f"admin:contacts_{model}_add")).status_code == 403
    pk = (StatusChangeRequest if model == "statuschangerequest" else PeriodUsage).objects.first().pk
    assert (
        super_client.post(reverse(f"admin:contacts_{model}_delete", args=[pk]), {"post": "yes"})
    ).status_code == 403
    assert (
        super_client.post(reverse(f"admin:contacts_{model}_change", args=[pk]), {}).status_code
        == 403
    )


# --- sources ------------------------------------------------------------------------


def test_source_admin_locked_kind_is_read_only(super_client, account):
    mobile = SourceFactory(name="Mobile app", kind="mobile_app")
    url = reverse("admin:contacts_source_change", args=[mobile.pk])
    page = super_client.get(url)
    assert 'name="default_marketing"' not in page.content.decode()
    response = super_client.post(
        url, {"name": "Mobile app", "kind": "mobile_app", "default_marketing": "on"}
    )
    assert response.status_code == 302
    mobile.refresh_from_db()
    assert mobile.default_marketing is False


def test_source_admin_refuses_marketing_for_a_locked_kind(super_client, account):
    response = super_client.post(
        reverse("admin:contacts_source_add"),
        {"name": "Inbox", "kind": "team_inbox", "default_marketing": "on"},
    )
    assert response.status_code == 200
    assert "Team inbox email sources are locked" in response.content.decode()
    assert not Source.objects.filter(name="Inbox").exists()


def test_source_admin_lists_the_lock(super_client, account):
    SourceFactory(name="Mobile app", kind="mobile_app")
    SourceFactory(name="Website form", kind="form")
    response = super_client.get(reverse("admin:contacts_source_changelist"))
    html = response.content.decode()
    assert html.count('<td class="field-locked_display"><img src="/static/admin/img/icon-yes') == 1


def test_source_with_contacts_is_not_deleted(super_client, people):
    source = people["ann"].source
    url = reverse("admin:contacts_source_delete", args=[source.pk])
    response = super_client.post(url, {"post": "yes"})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:contacts_source_change", args=[source.pk])
    assert messages_of(response) == [
        "The source “Manual” cannot be deleted: 2 contacts came from it and keep it as their "
        "source. Delete those contacts first, or keep the source."
    ]
    assert Source.objects.filter(pk=source.pk).exists()


def test_unused_source_can_be_deleted(super_client, account):
    unused = SourceFactory(name="Old import", kind="import")
    response = super_client.post(
        reverse("admin:contacts_source_delete", args=[unused.pk]), {"post": "yes"}
    )
    assert response.status_code == 302
    assert not Source.objects.filter(pk=unused.pk).exists()


# --- singletons ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "app", "name"),
    [(Account, "crm", "account"), (Subscription, "billing", "subscription")],
)
def test_singletons_cannot_be_added_twice_or_deleted(super_client, account, model, app, name):
    obj = model.load()
    assert super_client.get(reverse(f"admin:{app}_{name}_add")).status_code == 403
    assert (
        super_client.post(reverse(f"admin:{app}_{name}_delete", args=[obj.pk]), {"post": "yes"})
    ).status_code == 403
    assert model.objects.count() == 1
    changelist = super_client.get(reverse(f"admin:{app}_{name}_changelist"))
    assert changelist["Location"] == reverse(f"admin:{app}_{name}_change", args=[obj.pk])
    page = super_client.get(changelist["Location"])
    assert page.status_code == 200


def test_subscription_shows_its_prices_in_words(super_client, account):
    Subscription.load()
    page = super_client.get(reverse("admin:billing_subscription_change", args=[1]))
    html = page.content.decode()
    assert (
        "800.00 USD a month for up to 2,000 marketing contacts, then 225.00 USD per 5,000" in html
    )
    assert 'value="800.00"' in html
