"""The status service under real concurrency: the lock order and the guardrails.

PostgreSQL only: each thread has its own connection and real row locks. Before the lock
order of `crm.locks`, public intake locked a contact and then waited for the usage lock
while bulk changes held the usage lock and waited for that contact (`deadlock
detected`), and the hard cap was checked before the lock, so simultaneous changes all
passed it.
"""

import random

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from billing.services import billing_close_periods
from contacts.models import Contact
from contacts.status import sql
from contacts.status.models import PendingApproval, StatusChange
from contacts.status.results import ChangeHeld, StatusSource
from contacts.status.selectors import ledger_replay, usage_current
from contacts.status.services import (
    contacts_rollover,
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from crm.calendar import BillingCalendar
from tests.concurrency import Aside, run_together
from tests.conftest import at
from tests.factories import SourceFactory, UserFactory, set_guardrails
from workflows.runs import workflow_run_now
from workflows.services import workflow_create

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SRC = StatusSource("import", name="concurrency test")
BULK = "/api/contacts/marketing-status/"
EXTERNAL = "/api/intake/external-forms/"


def make_contacts(prefix: str, count: int) -> list[int]:
    source = SourceFactory(name=f"Bulk {prefix}", kind="import")
    Contact.objects.bulk_create(
        Contact(email=f"{prefix}{i}@example.com", source=source) for i in range(count)
    )
    return list(
        Contact.objects.filter(email__startswith=prefix).order_by("pk").values_list("pk", flat=True)
    )


def api_client(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def external_form(email: str) -> dict:
    return {
        "form_id": "wp-contact-7",
        "page_url": "https://example.org/contact",
        "fields": {"email": email, "first_name": "Racer"},
    }


def assert_counters_match_the_ledger() -> None:
    now = timezone.now()
    usage = usage_current(at=now)
    assert usage.live_count == Contact.objects.billable(now).count()
    start, end = BillingCalendar.for_account().period_bounds(now)
    assert ledger_replay(start=start, end=end).peak_count == usage.peak_count


def test_eight_concurrent_guarded_changes_never_pass_the_hard_cap(account):
    # Given 20 marketing contacts and a hard cap 20 above them
    ops = UserFactory(username="ops", is_superuser=True)
    contacts_set_marketing(contacts=make_contacts("base", 20), source=SRC)
    set_guardrails(hard_cap=40, operation_limit=None)
    batches = [make_contacts(f"t{n}-", 10) for n in range(8)]

    # When 8 clients each ask at once to make 10 more marketing
    responses = run_together(
        *[
            (
                lambda ids=ids: api_client(ops).post(
                    BULK, {"status": "marketing", "ids": ids}, format="json"
                )
            )
            for ids in batches
        ]
    )

    # Then exactly two fit under the cap; the other six wait for approval
    codes = sorted(response.status_code for response in responses)
    assert codes == [200, 200, 202, 202, 202, 202, 202, 202]
    assert usage_current().live_count == 40
    assert Contact.objects.filter(marketing_status="marketing").count() == 40
    assert PendingApproval.objects.filter(status="pending").count() == 6
    assert_counters_match_the_ledger()


def test_public_submissions_past_the_cap_are_stored_and_wait_for_approval(account):
    # Given a hard cap at the live count
    contacts_set_marketing(contacts=make_contacts("base", 5), source=SRC)
    set_guardrails(hard_cap=5)
    emails = [f"visitor{i}@example.org" for i in range(20)]

    # When 20 external-form submissions arrive, 4 at a time
    responses = []
    for start in range(0, 20, 4):
        responses += run_together(
            *[
                (lambda e=e: APIClient().post(EXTERNAL, external_form(e), format="json"))
                for e in emails[start : start + 4]
            ]
        )

    # Then every contact is stored, none is billed, and each upgrade waits for approval
    assert {response.status_code for response in responses} == {201}
    stored = Contact.objects.filter(email__in=emails)
    assert stored.count() == 20
    assert not stored.filter(marketing_status="marketing").exists()
    assert set(stored.values_list("marketing_reason_type", flat=True)) == {"form"}
    assert usage_current().live_count == 5
    assert PendingApproval.objects.filter(status="pending").count() == 20
    assert_counters_match_the_ledger()


def test_intake_bulk_changes_a_workflow_run_a_rollover_and_a_close_at_once(account):
    # Given contacts that public intake and bulk changes both touch
    set_guardrails(hard_cap=None, operation_limit=None)
    ids = make_contacts("shared", 400)
    emails = list(Contact.objects.filter(pk__in=ids).values_list("email", flat=True))
    contacts_set_marketing(contacts=ids[:200], source=SRC)
    Contact.objects.filter(pk__in=ids[300:]).update(lifecycle_stage="mql")
    workflow = workflow_create(
        name="MQL definition",
        criteria={
            "filterGroups": [
                {"filters": [{"propertyName": "lifecycle_stage", "operator": "EQ", "value": "mql"}]}
            ]
        },
        actions=[{"type": "set_marketing"}],
        purpose="enrollment",
        enabled=True,
    )
    rng = random.Random(7)

    def intake(n):
        def submit():
            client = APIClient()
            codes = []
            for email in rng.sample(emails, 15) + [f"new{n}-{i}@example.org" for i in range(5)]:
                codes.append(client.post(EXTERNAL, external_form(email), format="json").status_code)
            return codes

        return submit

    def bulk(n):
        def change():
            for round_ in range(6):
                chosen = sorted(rng.sample(ids, 80))
                if (n + round_) % 2:
                    contacts_set_marketing(contacts=chosen, source=SRC)
                else:
                    contacts_set_non_marketing(contacts=chosen, source=SRC)
            return "ok"

        return change

    # When intake, bulk changes, a workflow run, a rollover and a close all run at once
    results = run_together(
        intake(1),
        intake(2),
        intake(3),
        bulk(1),
        bulk(2),
        lambda: workflow_run_now(workflow=workflow).status,
        lambda: contacts_rollover().operation,
        lambda: len(billing_close_periods()),
        timeout=120,
    )

    # Then nothing deadlocked or failed, and the counters still equal the ledger
    for codes in results[:3]:
        assert set(codes) == {201}
    assert results[3:5] == ["ok", "ok"]
    assert results[5] == "done"
    assert StatusChange.objects.exists()
    assert_counters_match_the_ledger()


def test_a_status_change_goes_through_between_two_chunks_of_a_rollover(account, monkeypatch):
    monkeypatch.setattr(sql, "STATUS_ID_BATCH", 3)
    ids = make_contacts("roll", 9)
    november = at(2026, 11, 5)
    contacts_set_marketing(contacts=ids, source=SRC, at=november)
    contacts_set_non_marketing(contacts=ids, source=SRC, at=november)
    asides = []

    # After each chunk, a change on another connection: it must not wait for the rest.
    def between_chunks(done, total):
        aside = Aside(lambda: contacts_set_marketing(contacts=[ids[-1]], source=SRC))
        asides.append(aside)
        assert aside.done(timeout=30), "a status change waited for the whole rollover"

    result = contacts_rollover(progress=between_chunks)

    assert len(asides) == 3
    assert result.applied == 8  # the last contact was made marketing again in between
    assert [aside.result.changed for aside in asides] == [1, 0, 0]
    assert Contact.objects.filter(marketing_status="marketing").count() == 1
    assert_counters_match_the_ledger()


def test_a_held_change_retried_under_its_key_is_held_once(account):
    contacts_set_marketing(contacts=make_contacts("base", 3), source=SRC)
    set_guardrails(hard_cap=3)
    ids = make_contacts("late", 2)

    def attempt():
        try:
            contacts_set_marketing(contacts=ids, source=SRC, idempotency_key="k1", guarded=True)
        except ChangeHeld as held:
            return str(held)
        return "ran"

    outcomes = run_together(attempt, attempt, attempt)

    assert all(outcome.startswith("Waiting for approval") for outcome in outcomes)
    assert PendingApproval.objects.count() == 1
    assert usage_current().live_count == 3
