"""Rotation (DESIGN §1.6): at most K of a pool marketing at any instant, across periods."""

import datetime as dt

import pytest

from billing.guardrails import billing_approval_approve
from billing.models import BillingPeriod
from billing.services import billing_close_periods
from contacts.models import Contact
from contacts.status.models import PendingApproval, StatusChange
from contacts.status.services import contacts_rollover
from tests.conftest import at
from tests.factories import UserFactory, set_guardrails
from workflows.models import RotationMember, RotationPlan, RotationRun, RotationRunStatus
from workflows.rotation import rotation_demote, rotation_promote, rotation_tick
from workflows.selectors import rotation_billable_members

K, R = 10, 4
LEADS = {
    "filterGroups": [
        {"filters": [{"propertyName": "lifecycle_stage", "operator": "EQ", "value": "lead"}]}
    ]
}


@pytest.fixture
def pool(small_plan, make_contacts):
    """30 leads scored 0..29 (the pool) and 5 customers (not in it)."""
    leads = make_contacts(30)
    for score, pk in enumerate(leads.order_by("pk").values_list("pk", flat=True)):
        Contact.objects.filter(pk=pk).update(lead_score=score)
    make_contacts(5, lifecycle_stage="customer")
    return leads


@pytest.fixture
def plan(pool):
    return RotationPlan.objects.create(
        name="Prospecting", criteria=LEADS, size=K, rotate_per_period=R, lead_days=3, enabled=True
    )


def scores(queryset):
    return sorted(queryset.values_list("lead_score", flat=True))


def billable_members(plan, when):
    return rotation_billable_members(plan, at=when).count()


def test_nothing_is_promoted_before_the_periods_rollover(plan):
    # The usage state has never rolled over: the plan waits.
    assert rotation_promote(plan=plan, at=at(2026, 11, 2)) is None
    assert not Contact.objects.billable(at(2026, 11, 2)).exists()


def test_never_more_than_k_billable_members_across_three_periods(plan):
    contacts_rollover(at=at(2026, 11, 1, 0, 30))  # the hourly apply_due_downgrades
    # Period 1 (November): the first fill takes the best ten
    run = rotation_promote(plan=plan, at=at(2026, 11, 2))
    assert (run.promoted, run.members_before, run.members_after) == (10, 0, 10)
    assert scores(rotation_billable_members(plan, at=at(2026, 11, 2))) == list(range(20, 30))
    seen_never = set()
    for update, demote_at in [
        (at(2026, 12, 1), at(2026, 11, 28, 9)),
        (at(2027, 1, 1), at(2026, 12, 29, 9)),
        (at(2027, 2, 1), at(2027, 1, 29, 9)),
    ]:
        # Outside the lead time: nothing
        assert rotation_demote(plan=plan, at=demote_at.replace(day=demote_at.day - 2)) is None
        # Before the update date: the four lowest members are scheduled, still billable
        run = rotation_demote(plan=plan, at=demote_at)
        assert (run.demoted, run.members_before, run.members_after) == (R, K, K)
        leaving = set(run.candidate_ids)
        assert {c.pending_from(demote_at) for c in Contact.objects.filter(pk__in=leaving)} == {
            update
        }
        assert billable_members(plan, demote_at) == K
        # A second beat in the window changes nothing
        assert rotation_demote(plan=plan, at=demote_at.replace(hour=10)).pk == run.pk
        # Promotion is not due again inside the period
        assert rotation_promote(plan=plan, at=demote_at).status == RotationRunStatus.DONE
        assert billable_members(plan, demote_at) == K
        # Between the demotion and the rollover, and at the boundary itself
        assert billable_members(plan, update - dt.timedelta(microseconds=1)) == K
        assert billable_members(plan, update) == K - R
        # The close applies the rollover, like billing does
        [outcome] = billing_close_periods(as_of=update, at=update.replace(hour=1))
        assert outcome.status == "closed"
        assert outcome.peak_count == K  # the pool's contacts are all the billable ones
        assert billable_members(plan, update.replace(hour=1)) == K - R
        # Right after the rollover: the next best, never tried before, fill the slots
        after = update.replace(hour=2)
        run = rotation_promote(plan=plan, at=after)
        assert (run.members_before, run.promoted, run.members_after) == (K - R, R, K)
        promoted = set(run.candidate_ids)
        assert not promoted & leaving and not promoted & seen_never
        seen_never |= promoted
        assert billable_members(plan, after) == K
        assert Contact.objects.billable(after).count() == K
        # The demoted ones left the plan
        assert RotationMember.objects.filter(contact_id__in=leaving, left_at=after).count() == R
    # Each promotion took the best never-tried leads: 19..16, 15..12, 11..8
    assert sorted(
        Contact.objects.filter(pk__in=seen_never).values_list("lead_score", flat=True)
    ) == list(range(8, 20))
    assert [p.peak_count for p in BillingPeriod.objects.order_by("start")] == [K, K, K]
    # Ledger rows name the plan
    sources = set(
        StatusChange.objects.exclude(source_type="rollover").values_list("source_type", "source_id")
    )
    assert sources == {("rotation", str(plan.pk))}
    assert RotationRun.objects.filter(plan=plan).count() == 7


def test_engagement_ranking_demotes_the_least_recently_engaged(pool):
    plan = RotationPlan.objects.create(
        name="By engagement", criteria=LEADS, size=3, rotate_per_period=1, ranking="engagement"
    )
    ids = list(pool.order_by("pk").values_list("pk", flat=True))
    Contact.objects.filter(pk__in=ids[:3]).update(last_engaged_at=at(2026, 11, 5))
    Contact.objects.filter(pk=ids[1]).update(last_engaged_at=at(2026, 10, 1))
    contacts_rollover(at=at(2026, 11, 1, 0, 30))
    assert set(rotation_promote(plan=plan, at=at(2026, 11, 10)).candidate_ids) == set(ids[:3])
    assert rotation_demote(plan=plan, at=at(2026, 11, 29)).candidate_ids == [ids[1]]


def test_a_held_promotion_waits_for_approval_then_records_members(plan, small_plan):
    set_guardrails(operation_limit=5)
    contacts_rollover(at=at(2026, 11, 1, 0, 30))
    # When the fill is past billing's per-operation limit
    run = rotation_promote(plan=plan, at=at(2026, 11, 2))
    assert run.status == RotationRunStatus.HELD and "approval" in run.message
    assert not Contact.objects.billable(at(2026, 11, 2)).exists()
    assert not RotationMember.objects.exists()
    # A retry in the period is still held (one approval)
    assert rotation_promote(plan=plan, at=at(2026, 11, 3)).status == RotationRunStatus.HELD
    approval = PendingApproval.objects.get()
    # Approved: the contacts become marketing; the next beat records them as members
    billing_approval_approve(approval=approval, user=UserFactory(username="approver"))
    run = rotation_promote(plan=plan, at=at(2026, 11, 4))
    assert (run.status, run.promoted, run.members_after) == (RotationRunStatus.DONE, K, K)
    assert billable_members(plan, at(2026, 11, 4)) == K


def test_a_member_downgraded_by_someone_else_frees_its_slot_after_the_rollover(plan):
    from contacts.status.results import StatusSource
    from contacts.status.services import contacts_set_non_marketing

    contacts_rollover(at=at(2026, 11, 1, 0, 30))
    run = rotation_promote(plan=plan, at=at(2026, 11, 2))
    top = Contact.objects.filter(pk__in=run.candidate_ids).order_by("-lead_score").first()
    contacts_set_non_marketing(contacts=[top.pk], source=StatusSource("manual"), at=at(2026, 11, 5))
    rotation_tick(plan=plan, at=at(2026, 11, 29))  # demotes R more
    billing_close_periods(as_of=at(2026, 12, 1), at=at(2026, 12, 1, 1))
    run = rotation_promote(plan=plan, at=at(2026, 12, 1, 2))
    assert (run.members_before, run.promoted, run.members_after) == (K - R - 1, R + 1, K)


def test_beat_task_runs_enabled_plans(plan, time_machine):
    from workflows.tasks import run_rotation_plans

    RotationPlan.objects.create(name="Off", criteria=LEADS, size=2, rotate_per_period=1)
    contacts_rollover(at=at(2026, 11, 1, 0, 30))
    time_machine.move_to(at(2026, 11, 2, 9), tick=False)
    assert run_rotation_plans() == [{"plan": plan.pk, "demoted": None, "promoted": K}]
    time_machine.move_to(at(2026, 11, 29, 9), tick=False)
    assert run_rotation_plans() == [{"plan": plan.pk, "demoted": R, "promoted": K}]
    assert RotationRun.objects.count() == 2


def test_command_runs_and_dry_runs(plan, time_machine):
    from io import StringIO

    from django.core.management import call_command

    contacts_rollover(at=at(2026, 11, 1, 0, 30))
    time_machine.move_to(at(2026, 11, 2, 9), tick=False)
    out = StringIO()
    call_command("run_rotation", "--plan", str(plan.pk), "--dry-run", stdout=out)
    assert "would promote 10" in out.getvalue()
    assert (
        not RotationRun.objects.exists()
        and not Contact.objects.billable(at(2026, 11, 2, 9)).exists()
    )
    call_command("run_rotation", stdout=out)
    assert billable_members(plan, at(2026, 11, 2, 9)) == K


def test_plan_admin_shows_members_and_history(plan, client, superuser):
    contacts_rollover(at=at(2026, 11, 1, 0, 30))
    rotation_promote(plan=plan, at=at(2026, 11, 2))
    client.force_login(superuser)
    listing = client.get("/admin/workflows/rotationplan/")
    assert listing.status_code == 200
    page = client.get(f"/admin/workflows/rotationplan/{plan.pk}/change/")
    assert page.status_code == 200
    assert "Promote (after the rollover)" in page.content.decode()


def test_plan_admin_refuses_r_above_k_and_users_without_the_status_permission(pool, client):
    from django.contrib.auth.models import Permission

    user = UserFactory(username="planner")
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["add_rotationplan", "view_rotationplan"])
    )
    client.force_login(user)
    form = {
        "name": "P",
        "criteria": '{"filterGroups": []}',
        "size": "3",
        "rotate_per_period": "4",
        "ranking": "lead_score",
        "lead_days": "3",
    }
    assert client.post("/admin/workflows/rotationplan/add/", form).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="change_marketing_status"))
    response = client.post("/admin/workflows/rotationplan/add/", form)
    assert response.status_code == 200
    assert "Rotate at most" in response.content.decode()
    assert not RotationPlan.objects.exists()
