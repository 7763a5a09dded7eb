"""Workflows: enrollment, re-enrollment, precedence, overlaps, actions, reruns (DESIGN §1.5)."""

import pytest
from django.core import mail
from django.core.exceptions import ValidationError

from contacts.models import Contact
from contacts.outreach.models import AdAudienceMembership
from contacts.outreach.services import marketing_email_create
from contacts.status.models import StatusChange
from tests.factories import ContactFactory
from tests.workflows.wf_helpers import (
    M,
    N,
    exclusion,
    ledger,
    make_marketing,
    make_workflow,
    marketing_emails,
    statuses,
    tree,
)
from workflows import runs
from workflows.models import Enrollment, RunStatus, RunTrigger, WorkflowRun
from workflows.runs import workflow_run_execute, workflow_run_now, workflow_run_request

pytestmark = pytest.mark.django_db


def run(workflow, trigger=RunTrigger.MANUAL) -> WorkflowRun:
    return workflow_run_now(workflow=workflow, trigger=trigger)


# --- enrollment ---


def test_a_run_makes_newly_matching_contacts_marketing_once(account):
    # Given two MQLs and a lead
    ContactFactory(email="a@x.com", lifecycle_stage="mql")
    ContactFactory(email="b@x.com", lifecycle_stage="mql")
    ContactFactory(email="lead@x.com", lifecycle_stage="lead")
    workflow = make_workflow()

    # When the workflow runs
    first = run(workflow)

    # Then the MQLs are enrolled and marketing, each with one ledger row naming the workflow
    assert (first.status, first.matched, first.enrolled, first.changed) == ("done", 2, 2, 2)
    assert marketing_emails() == ["a@x.com", "b@x.com"]
    assert ledger() == [
        ("a@x.com", "upgrade", "workflow", str(workflow.pk), "MQL definition"),
        ("b@x.com", "upgrade", "workflow", str(workflow.pk), "MQL definition"),
    ]
    assert Enrollment.objects.filter(workflow=workflow).count() == 2
    assert first.duration is not None

    # And when a person sets one back and the workflow runs again, the decision stands
    from contacts.status.results import StatusSource
    from contacts.status.services import contacts_set_non_marketing

    a = Contact.objects.get(email="a@x.com")
    contacts_set_non_marketing(contacts=a, source=StatusSource("manual", name="Ann"))
    second = run(workflow)
    assert (second.matched, second.enrolled, second.changed) == (2, 0, 0)
    a.refresh_from_db()
    assert a.marketing_until is not None  # still pending non-marketing: not undone
    assert StatusChange.objects.filter(source_type="workflow").count() == 2


def test_without_re_enrollment_a_contact_that_leaves_and_returns_is_not_acted_on_again(account):
    contact = ContactFactory(email="a@x.com", lifecycle_stage="mql")
    workflow = make_workflow(
        actions=[{"type": "set_property", "field": "lead_status", "value": "open"}]
    )
    run(workflow)
    Contact.objects.filter(pk=contact.pk).update(lifecycle_stage="lead", lead_status="")
    run(workflow)
    Contact.objects.filter(pk=contact.pk).update(lifecycle_stage="mql")

    again = run(workflow)

    assert (again.matched, again.enrolled) == (1, 0)
    contact.refresh_from_db()
    assert contact.lead_status == ""
    enrollment = Enrollment.objects.get(workflow=workflow, contact=contact)
    assert (enrollment.times, enrollment.exited_at) == (1, None)


def test_with_re_enrollment_a_contact_is_acted_on_again_only_after_it_stopped_matching(account):
    contact = ContactFactory(email="a@x.com", lifecycle_stage="mql")
    workflow = make_workflow(
        actions=[{"type": "set_property", "field": "lead_status", "value": "open"}],
        re_enrollment=True,
    )
    assert run(workflow).enrolled == 1
    Contact.objects.filter(pk=contact.pk).update(lead_status="")
    # Still matching: not acted on again
    assert run(workflow).enrolled == 0
    contact.refresh_from_db()
    assert contact.lead_status == ""

    # It stops matching: a run marks the enrollment exited
    Contact.objects.filter(pk=contact.pk).update(lifecycle_stage="lead")
    assert run(workflow).enrolled == 0
    enrollment = Enrollment.objects.get(workflow=workflow, contact=contact)
    assert enrollment.exited_at is not None

    # It matches anew: enrolled (and acted on) again
    Contact.objects.filter(pk=contact.pk).update(lifecycle_stage="mql")
    third = run(workflow)
    assert third.enrolled == 1
    contact.refresh_from_db()
    assert contact.lead_status == "open"
    enrollment.refresh_from_db()
    assert (enrollment.times, enrollment.exited_at, enrollment.run_id) == (2, None, third.pk)


def test_a_workflow_with_no_groups_enrolls_nobody(account):
    ContactFactory(lifecycle_stage="mql")
    workflow = make_workflow(criteria={"filterGroups": []})
    result = run(workflow)
    assert (result.status, result.matched, result.enrolled) == ("done", 0, 0)


def test_bad_criteria_or_actions_are_refused_with_their_place(db):
    with pytest.raises(ValidationError) as bad:
        make_workflow(criteria=tree(("lifecycle_stage", "EQ", "nope")))
    assert "Group 1, filter 1 (Lifecycle stage is): the value is not valid" in str(bad.value)
    with pytest.raises(ValidationError) as bad:
        make_workflow(actions=[{"type": "send_marketing_email"}])
    assert "Action 1 (send_marketing_email) needs email." in str(bad.value)
    with pytest.raises(ValidationError) as bad:
        make_workflow(actions=[{"type": "send_marketing_email", "email": 999}])
    assert "Action 1: there is no marketing email #999." in str(bad.value)
    with pytest.raises(ValidationError) as bad:
        make_workflow(actions=[{"type": "set_property", "field": "lead_status", "value": "zzz"}])
    assert "'zzz' is not a lead_status" in str(bad.value)
    with pytest.raises(ValidationError) as bad:
        make_workflow(actions=[{"type": "set_marketing"}, {"type": "set_non_marketing"}])
    assert "cannot both" in str(bad.value)


# --- precedence: exclusion wins ---


def test_exclusion_wins_and_excluded_contacts_are_counted_as_refused(account):
    # Given three MQLs, one of them unsubscribed, and an enabled exclusion of unsubscribed contacts
    ContactFactory(email="a@x.com", lifecycle_stage="mql")
    ContactFactory(email="b@x.com", lifecycle_stage="mql")
    ContactFactory(email="u@x.com", lifecycle_stage="mql", unsubscribed=True)
    exclusion(criteria=tree(("unsubscribed", "EQ", True)))
    workflow = make_workflow()

    result = run(workflow)

    # Then the unsubscribed MQL is refused, not enrolled, and stays non-marketing
    assert (result.matched, result.enrolled, result.changed, result.refused) == (3, 2, 2, 1)
    assert marketing_emails() == ["a@x.com", "b@x.com"]
    assert not Enrollment.objects.filter(workflow=workflow, contact__email="u@x.com").exists()

    # And when the exclusion stops matching, the next run enrolls it
    Contact.objects.filter(email="u@x.com").update(unsubscribed=False)
    assert run(workflow).enrolled == 1
    assert statuses()["u@x.com"] == M


def test_a_disabled_exclusion_does_not_refuse(account):
    ContactFactory(email="u@x.com", lifecycle_stage="mql", unsubscribed=True)
    exclusion(criteria=tree(("unsubscribed", "EQ", True)), enabled=False)
    assert run(make_workflow()).changed == 1


def test_an_exclusion_workflow_schedules_non_marketing(account):
    a = ContactFactory(email="a@x.com", unsubscribed=True)
    make_marketing(a)
    workflow = exclusion(criteria=tree(("unsubscribed", "EQ", True)))

    result = run(workflow)

    assert (result.enrolled, result.changed) == (1, 1)
    a.refresh_from_db()
    assert a.marketing_status == M and a.marketing_until is not None  # deferred (§1.2)
    assert ledger()[-1][1:3] == ("downgrade_scheduled", "workflow")


# --- actions ---


def test_set_property_action_sets_lifecycle_stage_of_the_enrolled_only(account):
    ContactFactory(email="a@x.com", lead_status="open", lifecycle_stage="lead")
    ContactFactory(email="b@x.com", lead_status="", lifecycle_stage="lead")
    workflow = make_workflow(
        criteria=tree(("lead_status", "EQ", "open")),
        actions=[{"type": "set_property", "field": "lifecycle_stage", "value": "mql"}],
        purpose="other",
    )

    result = run(workflow)

    assert result.results == {"1:set_property": {"changed": 1}}
    assert dict(Contact.objects.values_list("email", "lifecycle_stage")) == {
        "a@x.com": "mql",
        "b@x.com": "lead",
    }
    assert not StatusChange.objects.exists()


def test_send_email_action_goes_through_the_send_guard_and_counts_refusals(account):
    ok = ContactFactory(email="ok@x.com", lifecycle_stage="mql")
    unsub = ContactFactory(email="unsub@x.com", lifecycle_stage="mql", unsubscribed=True)
    ContactFactory(email="non@x.com", lifecycle_stage="mql")
    make_marketing(ok, unsub)
    email = marketing_email_create(
        name="Welcome",
        subject="Hi",
        body="Hello {first_name} {unsubscribe_url}",
        audience_filter={"lifecycle_stage": "mql"},
    )
    workflow = make_workflow(
        actions=[{"type": "send_marketing_email", "email": email.pk}], purpose="other"
    )

    result = run(workflow)

    assert [m.to for m in mail.outbox] == [["ok@x.com"]]
    assert (result.enrolled, result.refused) == (3, 2)
    assert result.results["1:send_marketing_email"] == {
        "sent": 1,
        "refused_non_marketing": 1,
        "refused_unsubscribed": 1,
        "refused_bounced": 0,
    }


def test_ad_audience_actions_add_marketing_contacts_only_and_remove_anyone(account):
    from contacts.outreach.models import AdAudience

    audience = AdAudience.objects.create(name="Retargeting", platform="facebook")
    ok = ContactFactory(email="ok@x.com", lifecycle_stage="mql")
    ContactFactory(email="non@x.com", lifecycle_stage="mql")
    make_marketing(ok)
    add = make_workflow(
        "Add", actions=[{"type": "add_to_ad_audience", "audience": audience.pk}], purpose="other"
    )

    added = run(add)

    assert list(AdAudienceMembership.objects.values_list("contact__email", flat=True)) == [
        "ok@x.com"
    ]
    assert (added.refused, added.results["1:add_to_ad_audience"]) == (
        1,
        {"added": 1, "refused_non_marketing": 1},
    )
    remove = make_workflow(
        "Remove",
        actions=[{"type": "remove_from_ad_audience", "audience": audience.pk}],
        purpose="other",
    )
    assert run(remove).results["1:remove_from_ad_audience"] == {"removed": 1}
    assert not AdAudienceMembership.objects.exists()


def test_set_property_service_refuses_other_fields(db):
    from contacts.services import contacts_set_property
    from contacts.status.results import StatusError

    contact = ContactFactory()
    with pytest.raises(StatusError, match="Only lead_status and lifecycle_stage"):
        contacts_set_property(contacts=[contact.pk], field="marketing_status", value="marketing")
    with pytest.raises(StatusError, match="not a valid lifecycle stage"):
        contacts_set_property(contacts=[contact.pk], field="lifecycle_stage", value="boss")
    contact.refresh_from_db()
    assert contact.marketing_status == N


# --- a killed run, rerun ---


def test_a_run_killed_after_its_first_chunk_resumes_without_duplicates(account, monkeypatch):
    # Given 5 MQLs spread over 3 chunks of 2 ids
    people = [ContactFactory(email=f"p{i}@x.com", lifecycle_stage="mql") for i in range(5)]
    first_id = min(p.pk for p in people)
    monkeypatch.setattr(runs, "WORKFLOW_RANGE_BATCH", 2)
    workflow = make_workflow()
    original = runs.contacts_set_marketing
    calls = {"n": 0}

    def dies_in_the_second_chunk(**kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker killed")
        return original(**kwargs)

    monkeypatch.setattr(runs, "contacts_set_marketing", dies_in_the_second_chunk)
    broken = run(workflow)

    # Then the first chunk is stored, the second rolled back, and the run says it failed
    assert broken.status == RunStatus.FAILED
    assert "worker killed" in broken.error
    assert broken.cursor == first_id + 2
    assert Enrollment.objects.count() == 2
    assert StatusChange.objects.count() == 2

    # When it is rerun
    monkeypatch.setattr(runs, "contacts_set_marketing", original)
    resumed = workflow_run_execute(run=broken)

    # Then every MQL is enrolled and marketing once: no duplicate enrollment or ledger row
    assert (resumed.status, resumed.enrolled, resumed.changed) == ("done", 5, 5)
    assert Enrollment.objects.count() == 5
    assert sorted(StatusChange.objects.values_list("contact_id", flat=True)) == sorted(
        p.pk for p in people
    )
    # and a rerun from scratch finds nothing new
    assert run(workflow).enrolled == 0
    assert StatusChange.objects.count() == 5


def test_a_chunk_replayed_after_its_commit_writes_no_second_ledger_row(account, monkeypatch):
    # Given a run whose chunk committed but whose cursor never moved (killed right after)
    people = [ContactFactory(email=f"p{i}@x.com", lifecycle_stage="mql") for i in range(3)]
    workflow = make_workflow()
    queued = workflow_run_request(workflow=workflow, trigger=RunTrigger.API, enqueue=False)
    done = workflow_run_execute(run=queued)
    WorkflowRun.objects.filter(pk=done.pk).update(status="running", cursor=0)

    # When it runs again
    again = workflow_run_execute(run=done)

    # Then the status service replays its idempotency key: no new ledger rows
    assert again.status == "done"
    assert StatusChange.objects.count() == 3
    assert Enrollment.objects.count() == 3
    assert (again.enrolled, again.changed) == (3, 3)
    assert len(people) == 3
