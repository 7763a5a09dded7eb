"""Chaos on PostgreSQL: eight writers for a bounded time across a period boundary.

Seven workers each draw, from a seeded random sequence, single, bulk and criteria status
changes (through the services and through the API), deletes, public intake (our form
and external forms, through the endpoints and the service), workflow runs, closes of
the billing periods and verify_billing; the eighth closes the periods again and again.
The clock (time-machine, ticking) starts shortly before an update date, so the changes,
the rollover and the closes cross the boundary while the others write, and a hard cap
just above the opening count is hit early and often.

Afterwards the books must balance: the live count equals a recount and the ledger, every
period's stored peak equals the ledger replay, each closed period has exactly one
invoice, the billable count never went above the cap, and verify_billing exits 0. Every
exception a worker meets (a `deadlock detected` included) and every 5xx fails the test.
Bounded by time (WORK_SECONDS) and by count (MAX_OPERATIONS a worker).
"""

import datetime as dt
import io
import random
import threading
import time
from collections import Counter

import pytest
import time_machine
from django.core.cache import cache
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from billing.management.commands import close_billing_periods as close_command
from billing.models import BillingPeriod, Invoice
from billing.services import billing_close_periods
from contacts.criteria.compiler import criteria_queryset
from contacts.intake.models import Form
from contacts.intake.services import external_form_submit, form_save
from contacts.models import Contact
from contacts.status.models import PeriodUsage, StatusChange
from contacts.status.results import ChangeHeld, StatusSource
from contacts.status.selectors import ledger_replay, usage_current
from contacts.status.services import (
    contacts_delete,
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from tests.concurrency import run_together
from tests.factories import SourceFactory, UserFactory, set_guardrails
from workflows.runs import workflow_run_now
from workflows.services import workflow_create

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

SEED = 20_261_203
WORKERS = 8
WORK_SECONDS = 20
MAX_OPERATIONS = 250  # a worker's bound besides the time
BOUNDARY = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)  # an update date (update day 1, UTC)
SET_UP_AT = BOUNDARY - dt.timedelta(hours=1)
START = BOUNDARY - dt.timedelta(seconds=9)  # the clock crosses it mid-run
CONTACTS = 600
OPENING_MARKETING = 250
HARD_CAP = 290
SRC = StatusSource("import", name="chaos")
ACME = {"filterGroups": [{"filters": [{"propertyName": "company", "operator": "EQ", "value": "Acme"}]}]}  # fmt: skip
MQL = {"filterGroups": [{"filters": [{"propertyName": "lifecycle_stage", "operator": "EQ", "value": "mql"}]}]}  # fmt: skip
TICK = dt.timedelta(microseconds=1)


class World:
    """What the workers share: ids, the API user, the channels, and what they saw."""

    def __init__(self, *, ids, user, workflow, form):
        self.ids = ids
        self.user = user
        self.workflow = workflow
        self.form = form
        self.failures: list[str] = []
        self.done: Counter = Counter()  # operations run, by name, and "held"
        self.closed: list[tuple[dt.datetime, str]] = []
        self._lock = threading.Lock()

    def note(self, what: str) -> None:
        with self._lock:
            self.done[what] += 1

    def record_closes(self, outcomes) -> None:
        with self._lock:
            self.closed += [(o.period_start, o.status) for o in outcomes]

    def email(self, rng) -> str:
        # Existing, deleted and new contacts alike.
        return f"c{rng.randrange(CONTACTS + 200)}@example.org"


def api(world: World, response, *, allowed: set[int]) -> None:
    if response.status_code >= 500 or response.status_code not in allowed:
        raise AssertionError(f"HTTP {response.status_code}: {getattr(response, 'data', '')}")
    if response.status_code == 202 and response.data.get("held"):
        world.note("held")


# --- the operations: each takes (world, rng, client) --------------------------------------


def single_service(world, rng, client):
    contact = rng.choice(world.ids)
    if rng.random() < 0.6:
        contacts_set_marketing(contacts=contact, source=SRC, guarded=True)
    else:
        contacts_set_non_marketing(contacts=contact, source=SRC)


def single_api(world, rng, client):
    status = rng.choice(["marketing", "marketing", "non_marketing"])
    response = client.post(
        f"/api/contacts/{rng.choice(world.ids)}/marketing-status/",
        {"status": status},
        format="json",
    )
    api(world, response, allowed={200, 202, 404})


def bulk_service(world, rng, client):
    chosen = rng.sample(world.ids, 20)
    if rng.random() < 0.5:
        contacts_set_marketing(contacts=chosen, source=SRC, guarded=True)
    else:
        contacts_set_non_marketing(contacts=chosen, source=SRC)


def bulk_api(world, rng, client):
    body = {"status": rng.choice(["marketing", "non_marketing"]), "ids": rng.sample(world.ids, 15)}
    response = client.post("/api/contacts/marketing-status/", body, format="json")
    api(world, response, allowed={200, 202})


def criteria_service(world, rng, client):
    acme = criteria_queryset(ACME, now=timezone.now())
    if rng.random() < 0.5:
        contacts_set_marketing(contacts=acme, source=SRC, guarded=True)
    else:
        contacts_set_non_marketing(contacts=acme, source=SRC)


def criteria_api(world, rng, client):
    body = {
        "status": rng.choice(["marketing", "non_marketing"]),
        "filter": {"lifecycle_stage": "lead"},
    }
    response = client.post("/api/contacts/marketing-status/", body, format="json")
    api(world, response, allowed={200, 202})


def edit_api(world, rng, client):
    body = {"lifecycle_stage": rng.choice(["lead", "mql", "subscriber"])}
    response = client.patch(f"/api/contacts/{rng.choice(world.ids)}/", body, format="json")
    api(world, response, allowed={200, 404})


def delete(world, rng, client):
    contact = rng.choice(world.ids)
    if rng.random() < 0.5:
        contacts_delete(contacts=[contact])
    else:
        api(world, client.delete(f"/api/contacts/{contact}/"), allowed={204, 404})


def visitor(rng) -> APIClient:
    """A visitor's client: public intake is throttled per address, and visitors are many."""
    return APIClient(REMOTE_ADDR=f"10.8.{rng.randrange(256)}.{rng.randrange(1, 255)}")


def intake(world, rng, client):
    email = world.email(rng)
    submission_id = f"s{rng.randrange(40)}"  # retries, and one id on several forms
    choice = rng.randrange(3)
    if choice == 0:
        body = {"email": email, "submission_id": submission_id}
        response = visitor(rng).post(f"/api/intake/forms/{world.form.slug}/", body, format="json")
    elif choice == 1:
        body = {
            "form_id": f"wp-{rng.randrange(3)}",
            "fields": {"email": email},
            "submission_id": submission_id,
        }
        response = visitor(rng).post("/api/intake/external-forms/", body, format="json")
    else:
        result = external_form_submit(
            form_identifier="service", data={"email": email}, submission_id=submission_id
        )
        if result.intake and result.intake.held:
            world.note("held")
        return
    api(world, response, allowed={201})


def workflow_run(world, rng, client):
    if rng.random() < 0.5:
        run = workflow_run_now(workflow=world.workflow)
    else:
        response = client.post(f"/api/workflows/{world.workflow.pk}/run/", {}, format="json")
        api(world, response, allowed={202})
        run = world.workflow.runs.get(pk=response.data["id"])
    if run.status == "failed":
        raise AssertionError(f"workflow run {run.pk} failed: {run.error}")
    if run.status == "held":
        world.note("held")


def close(world, rng, client):
    if rng.random() < 0.5:
        outcomes = billing_close_periods()
    else:
        # The command fails (CommandError) if a period is held: the ledger and counters
        # differ. Its outcomes are recorded by the test's wrapper of the service it calls.
        call_command("close_billing_periods", stdout=io.StringIO())
        return
    world.record_closes(outcomes)


def verify(world, rng, client):
    call_command("verify_billing", "--periods", "1", stdout=io.StringIO())


OPERATIONS = [
    (single_service, 4),
    (single_api, 4),
    (bulk_service, 3),
    (bulk_api, 3),
    (criteria_service, 1),
    (criteria_api, 1),
    (edit_api, 2),
    (delete, 2),
    (intake, 5),
    (workflow_run, 1),
    (close, 1),
    (verify, 1),
]


def worker(world: World, index: int, deadline: float):
    def work():
        rng = random.Random(SEED + index)
        client = APIClient()
        client.force_authenticate(world.user)
        functions, weights = zip(*OPERATIONS, strict=True)
        # Each kind at least once (the first rounds), then the seeded draw.
        plan = list(functions[index :: WORKERS - 1])
        count = 0
        while count < MAX_OPERATIONS and time.monotonic() < deadline:
            operation = plan.pop(0) if plan else rng.choices(functions, weights)[0]
            count += 1
            try:
                operation(world, rng, client)
            except ChangeHeld:
                world.note("held")
            except Exception as error:  # every other exception fails the test, deadlocks too
                world.failures.append(f"worker {index}, {operation.__name__}: {error!r}")
            world.note(operation.__name__)
        return count

    return work


def closer(world: World, deadline: float):
    def work():
        count = 0
        while count < MAX_OPERATIONS and time.monotonic() < deadline:
            count += 1
            try:
                world.record_closes(billing_close_periods())
            except Exception as error:
                world.failures.append(f"closer: {error!r}")
            time.sleep(0.05)  # paces the loop; nothing is asserted on time
        return count

    return work


def build_world() -> World:
    source = SourceFactory(name="Chaos import", kind="import")
    stages = ["lead", "mql", "subscriber", "subscriber", "lead", "subscriber"]
    Contact.objects.bulk_create(
        Contact(
            email=f"c{i}@example.org",
            source=source,
            lifecycle_stage=stages[i % len(stages)],
            company="Acme" if i % 7 == 0 else "",
        )
        for i in range(CONTACTS)
    )
    ids = sorted(Contact.objects.values_list("pk", flat=True))
    opening = random.Random(SEED).sample(ids, OPENING_MARKETING)
    contacts_set_marketing(contacts=opening, source=SRC)
    contacts_set_non_marketing(contacts=opening[:60], source=SRC)  # due at the boundary
    set_guardrails(hard_cap=HARD_CAP, operation_limit=None)
    workflow = workflow_create(
        name="MQL definition",
        criteria=MQL,
        actions=[{"type": "set_marketing"}],
        purpose="enrollment",
        enabled=True,
        event_triggered=True,
    )
    form = form_save(form=Form(name="Chaos form", slug="chaos", fields=[]))
    user = UserFactory(username="chaos", is_superuser=True)
    return World(ids=ids, user=user, workflow=workflow, form=form)


def test_eight_writers_across_a_period_boundary_keep_the_books_balanced(account, monkeypatch):
    cache.clear()  # the intake throttle's counts
    with time_machine.travel(SET_UP_AT, tick=False):
        world = build_world()

    def close_and_record(**kwargs):
        outcomes = billing_close_periods(**kwargs)
        world.record_closes(outcomes)
        return outcomes

    # The command's closes count as much as the service's: either may win the period.
    monkeypatch.setattr(close_command, "billing_close_periods", close_and_record)
    with time_machine.travel(START, tick=True):
        deadline = time.monotonic() + WORK_SECONDS
        counts = run_together(
            closer(world, deadline),
            *[worker(world, index, deadline) for index in range(WORKERS - 1)],
            timeout=WORK_SECONDS + 60,
        )
        now = timezone.now()

        # Nothing failed, deadlocked or answered 5xx; every kind of operation ran
        assert world.failures == []
        assert all(count > 0 for count in counts)
        assert set(world.done) - {"held"} == {function.__name__ for function, _ in OPERATIONS}
        assert now > BOUNDARY
        # The cap was hit, and held what it had to
        assert world.done["held"] > 0
        # The period that ended was closed during the run, once
        february = BOUNDARY - dt.timedelta(days=28)
        assert [status for start, status in world.closed if start == february].count("closed") == 1

        # The live count equals the ledger and a recount
        usage = usage_current(at=now)
        assert usage.period_start == BOUNDARY
        count_now = ledger_replay(start=BOUNDARY, end=now + TICK).closing_count
        assert usage.live_count == count_now == Contact.objects.billable(now).count()
        # Every period's stored peak equals the ledger replay, and none passed the cap
        peaks = {}
        for row in PeriodUsage.objects.order_by("period_start"):
            peaks[row.period_start] = ledger_replay(start=row.period_start, end=row.period_end)
            assert (row.period_start, row.peak_count) == (
                row.period_start,
                peaks[row.period_start].peak_count,
            )
            assert row.peak_count <= HARD_CAP
        assert list(peaks) == [february, BOUNDARY]
        # Exactly one invoice per closed period, none held
        closed = BillingPeriod.objects.get()
        assert (closed.start, closed.status) == (february, "closed")
        assert closed.peak_count == peaks[february].peak_count
        assert Invoice.objects.filter(period=closed).count() == 1
        assert StatusChange.objects.filter(action="rollover").exists()
        # verify_billing agrees
        out = io.StringIO()
        call_command("verify_billing", stdout=out)
        assert out.getvalue().endswith("All 2 periods agree with the ledger.\n")
