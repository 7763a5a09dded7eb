"""Hygiene (DESIGN §1.6): the wizard's selection, saving and scheduling; policies on the beat."""

import pytest
from django.contrib.auth.models import Permission

from contacts.models import Contact
from contacts.status.models import StatusChange
from contacts.status.results import StatusSource
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from tests.conftest import at
from tests.factories import UserFactory
from workflows.hygiene import hygiene_policies_run_due, hygiene_run
from workflows.models import HygienePolicy, HygieneRun, HygieneSchedule, HygieneTrigger
from workflows.selectors import hygiene_preview

SRC = StatusSource("import", name="setup")
CREATED = at(2026, 8, 1)
DEC_1 = at(2026, 12, 1)
NOW = at(2026, 11, 20, 12)

UNSUB_BOUNCED = {"include_unsubscribed": True, "include_hard_bounced": True}


@pytest.fixture
def book(small_plan, make_contacts):
    """22 marketing contacts (live 22, one pending → next opening 21), created 1 Aug 2026:

    3 unsubscribed, 2 hard bounced (one of them also unsubscribed), 4 unengaged since
    July (two never engaged), 12 engaged on 10 Nov, and 1 unsubscribed contact already
    pending non-marketing; plus 2 non-marketing unsubscribed contacts (never counted).
    """
    marketing = make_contacts(22, created_at=CREATED, last_engaged_at=at(2026, 11, 10))
    ids = list(marketing.order_by("pk").values_list("pk", flat=True))
    Contact.objects.filter(pk__in=ids).update(created_at=CREATED)
    groups = {
        "unsub": ids[0:3],
        "bounced": ids[2:4],  # ids[2] is both
        "unengaged": ids[4:8],
        "pending": ids[8:9],
    }
    Contact.objects.filter(pk__in=groups["unsub"] + groups["pending"]).update(unsubscribed=True)
    Contact.objects.filter(pk__in=groups["bounced"]).update(hard_bounced=True)
    Contact.objects.filter(pk__in=groups["unengaged"][:2]).update(last_engaged_at=at(2026, 7, 1))
    Contact.objects.filter(pk__in=groups["unengaged"][2:]).update(last_engaged_at=None)
    contacts_set_marketing(contacts=ids, source=SRC, at=at(2026, 11, 2))
    contacts_set_non_marketing(contacts=groups["pending"], source=SRC, at=at(2026, 11, 5))
    others = make_contacts(2, unsubscribed=True)
    Contact.objects.filter(pk__in=others.values("pk")).update(created_at=CREATED)
    return groups


def test_preview_counts_only_billable_contacts_without_a_pending_change(book):
    # Given the book; when previewing unsubscribed + hard bounced
    preview = hygiene_preview(options=UNSUB_BOUNCED, now=NOW)
    # Then 4 contacts (3 unsubscribed + 1 more bounced; the pending and non-marketing ones not)
    assert preview.count == 4
    assert preview.by_reason == {"unsubscribed": 3, "hard_bounced": 2}
    assert preview.effective_from == DEC_1
    # And the saving: next opening 21 → 17: 1000 + 3×100 − (1000 + 2×100)
    assert preview.cost["next_opening"] == 21
    assert preview.cost["next_opening_after"] == 17
    assert preview.saving == 100
    assert preview.currency == "USD"


def test_unengaged_and_criteria_are_added_to_the_union(book):
    options = {
        **UNSUB_BOUNCED,
        "include_unengaged": True,
        "unengaged_days": 90,
        "criteria": {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "email", "operator": "EQ", "value": "h21@example.com"}
                    ]
                }
            ]
        },
    }
    preview = hygiene_preview(options=options, now=NOW)
    assert preview.by_reason == {
        "unsubscribed": 3,
        "hard_bounced": 2,
        "unengaged": 4,
        "criteria": 1,
    }
    assert preview.count == 9
    # 21 → 12: 1300 − 1100
    assert preview.saving == 200


def test_unengaged_skips_contacts_created_within_the_window(book, make_contacts):
    # Given a marketing contact created 10 days ago that never engaged
    fresh = make_contacts(1)
    Contact.objects.filter(pk__in=fresh.values("pk")).update(created_at=at(2026, 11, 10))
    contacts_set_marketing(contacts=fresh, source=SRC, at=at(2026, 11, 11))
    # When previewing unengaged for 90 days; then only the four old ones
    preview = hygiene_preview(options={"include_unengaged": True, "unengaged_days": 90}, now=NOW)
    assert preview.count == 4


def test_run_schedules_them_non_marketing_from_the_next_update_date(book):
    # When the wizard's confirmation runs
    run = hygiene_run(
        options=UNSUB_BOUNCED, idempotency_key="k1", trigger=HygieneTrigger.WIZARD, at=NOW
    )
    # Then the four are pending from 1 Dec, still billable now
    expected = sorted(set(book["unsub"] + book["bounced"]))
    pending = Contact.objects.pending_downgrade(NOW).exclude(pk__in=book["pending"])
    assert sorted(pending.values_list("pk", flat=True)) == expected
    assert Contact.objects.billable(NOW).count() == 22
    assert {c.pending_from(NOW) for c in Contact.objects.filter(pk__in=expected)} == {DEC_1}
    assert (run.matched, run.scheduled, run.saving, run.effective_from) == (4, 4, 100, DEC_1)
    assert run.breakdown == {"unsubscribed": 3, "hard_bounced": 2}
    # And the ledger says hygiene
    rows = StatusChange.objects.filter(contact_id__in=expected)
    scheduled = rows.filter(action="downgrade_scheduled")
    assert scheduled.count() == 4
    assert set(scheduled.values_list("source_type", "source_name", "effective_at")) == {
        ("hygiene", "Hygiene wizard", DEC_1)
    }
    assert Contact.objects.get(pk=expected[0]).marketing_reason_type == "hygiene"


def test_a_double_submit_schedules_once(book):
    first = hygiene_run(options=UNSUB_BOUNCED, idempotency_key="k1", trigger="wizard", at=NOW)
    ledger = StatusChange.objects.count()
    again = hygiene_run(
        options=UNSUB_BOUNCED, idempotency_key="k1", trigger="wizard", at=at(2026, 11, 20, 13)
    )
    assert again.pk == first.pk
    assert HygieneRun.objects.count() == 1
    assert StatusChange.objects.count() == ledger


def test_a_second_run_finds_nothing_new(book):
    hygiene_run(options=UNSUB_BOUNCED, idempotency_key="k1", trigger="wizard", at=NOW)
    second = hygiene_run(options=UNSUB_BOUNCED, idempotency_key="k2", trigger="wizard", at=NOW)
    assert (second.matched, second.scheduled, second.saving) == (0, 0, 0)


def test_nothing_ticked_selects_nobody(book):
    run = hygiene_run(options={}, idempotency_key="k1", trigger="wizard", at=NOW)
    assert (run.matched, run.scheduled) == (0, 0)
    assert StatusChange.objects.filter(source_type="hygiene").count() == 0


# --- the policy on the beat


def test_policy_before_update_runs_once_inside_its_window(book):
    policy = HygienePolicy.objects.create(
        name="Monthly clean-up",
        enabled=True,
        schedule=HygieneSchedule.BEFORE_UPDATE,
        days_before_update=3,
        include_unsubscribed=True,
        include_hard_bounced=True,
    )
    # Not yet: 4 days before 1 Dec
    assert hygiene_policies_run_due(at=at(2026, 11, 27)) == []
    # Inside the window: one run, the same ledger source (hygiene / policy id / name)
    [run] = hygiene_policies_run_due(at=at(2026, 11, 28, 1))
    assert (run.policy, run.trigger, run.scheduled, run.saving) == (policy, "schedule", 4, 100)
    assert set(
        StatusChange.objects.filter(
            action="downgrade_scheduled", source_type="hygiene"
        ).values_list("source_id", "source_name")
    ) == {(str(policy.pk), "Monthly clean-up")}
    # The next beats in the same window do nothing
    assert hygiene_policies_run_due(at=at(2026, 11, 29)) == []
    assert HygieneRun.objects.count() == 1


def test_policy_on_an_interval_and_disabled_policies(book):
    HygienePolicy.objects.create(name="Off", enabled=False, include_unsubscribed=True)
    HygienePolicy.objects.create(
        name="Weekly", enabled=True, schedule=HygieneSchedule.INTERVAL, interval_days=7,
        include_unsubscribed=False, include_hard_bounced=True,
    )  # fmt: skip
    [run] = hygiene_policies_run_due(at=NOW)
    assert (run.name, run.scheduled) == ("Weekly", 2)
    assert hygiene_policies_run_due(at=at(2026, 11, 20, 18)) == []


def test_beat_task_runs_due_policies(book, time_machine):
    from workflows.tasks import run_hygiene_policies

    policy = HygienePolicy.objects.create(
        name="Before", enabled=True, days_before_update=3, include_hard_bounced=False
    )
    time_machine.move_to(at(2026, 11, 29, 9), tick=False)
    assert run_hygiene_policies() == [
        {"run": HygieneRun.objects.get().pk, "policy": policy.pk, "scheduled": 3}
    ]
    assert run_hygiene_policies() == []


# --- the wizard (admin)

WIZARD = "/admin/workflows/hygiene/"


def _ops(client, *, marketing_status=True):
    perms = ["view_contact", "add_hygienerun"]
    if marketing_status:
        perms.append("change_marketing_status")
    user = UserFactory(username=f"ops{marketing_status}")
    user.user_permissions.set(Permission.objects.filter(codename__in=perms))
    client.force_login(user)
    return user


def test_wizard_previews_then_schedules_once(book, client, time_machine):
    time_machine.move_to(NOW, tick=False)
    _ops(client)
    form = {
        "include_unsubscribed": "on",
        "include_hard_bounced": "on",
        "unengaged_days": "90",
        "criteria": '{"filterGroups": []}',
    }
    page = client.post(WIZARD, form)
    assert page.status_code == 200
    text = page.content.decode()
    assert 'id="hygiene-count">4<' in text
    assert "1.00 USD" in text  # the saving
    key = page.context["confirm_form"]["idempotency_key"].value()
    confirm = {**form, "step": "confirm", "idempotency_key": key}
    done = client.post(WIZARD, confirm)
    assert done.status_code == 302
    again = client.post(WIZARD, confirm)
    assert again.status_code == 302
    assert HygieneRun.objects.count() == 1
    assert StatusChange.objects.filter(source_type="hygiene").count() == 4
    # The contacts list shows them non-marketing from 1 Dec
    listing = client.get("/admin/contacts/contact/?pending=true").content.decode()
    assert listing.count("1 Dec 2026") >= 5


def test_wizard_needs_the_marketing_status_permission(book, client):
    _ops(client, marketing_status=False)
    assert client.get(WIZARD).status_code == 403
    assert client.post(WIZARD, {"step": "confirm", "idempotency_key": "x"}).status_code == 403
    assert HygieneRun.objects.count() == 0
    assert StatusChange.objects.filter(source_type="hygiene").count() == 0


def test_policy_admin_saves_a_policy_and_needs_the_marketing_status_permission(book, client):
    user = _ops(client)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_hygienepolicy", "add_hygienepolicy"])
    )
    form = {
        "name": "Bounces",
        "enabled": "on",
        "include_hard_bounced": "on",
        "unengaged_days": "90",
        "criteria": '{"filterGroups": []}',
        "schedule": "before_update",
        "days_before_update": "3",
        "interval_days": "7",
    }
    response = client.post("/admin/workflows/hygienepolicy/add/", form)
    assert response.status_code == 302
    policy = HygienePolicy.objects.get()
    assert policy.options()["include_hard_bounced"] is True
    assert policy.options()["include_unsubscribed"] is False
    # Without contacts.change_marketing_status: no adding, nothing stored
    other = _ops(client, marketing_status=False)
    other.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_hygienepolicy", "add_hygienepolicy"])
    )
    client.force_login(other)
    assert (
        client.post("/admin/workflows/hygienepolicy/add/", {**form, "name": "X"}).status_code == 403
    )
    assert HygienePolicy.objects.count() == 1


def test_runs_are_read_only_in_the_admin(book, client, superuser):
    run = hygiene_run(options=UNSUB_BOUNCED, idempotency_key="k1", trigger="wizard", at=NOW)
    client.force_login(superuser)
    assert client.get(f"/admin/workflows/hygienerun/{run.pk}/change/").status_code == 200
    assert (
        client.post(f"/admin/workflows/hygienerun/{run.pk}/delete/", {"post": "yes"}).status_code
        == 403
    )
    assert client.get("/admin/workflows/hygienerun/add/").status_code == 403
    assert HygieneRun.objects.filter(pk=run.pk).exists()


def test_the_wizard_uses_the_admins_form_rows_with_each_box_before_its_label(account):
    from django.test import Client

    from tests.factories import UserFactory

    client = Client()
    client.force_login(UserFactory(username="root", is_superuser=True, is_staff=True))

    html = client.get("/admin/workflows/hygiene/").content.decode()

    assert "admin/css/forms.css" in html
    row = html.split('<div class="form-row field-include_unsubscribed">')[1]
    box = row.split('<div class="flex-container checkbox-row">')[1]
    assert box.startswith('<input type="checkbox" name="include_unsubscribed"')
    assert '<label class="vCheckboxLabel" for="id_include_unsubscribed">' in box
