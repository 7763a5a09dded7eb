"""verify_billing while status changes commit: it reads one snapshot, so it never reports
a disagreement that exists only between two of its own reads.

The writers need their own connections and transactions: PostgreSQL only.
"""

import io
import random
import threading
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from billing.management.commands import verify_billing
from contacts.status.models import StatusChange
from contacts.status.results import StatusSource
from contacts.status.services import (
    contacts_delete,
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from tests.concurrency import run_together

SRC = StatusSource("import", name="verify under load")
VERIFY_RUNS = 10
WRITER_MAX_CHANGES = 400


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_verify_under_concurrent_writers_reports_no_false_mismatch(
    account, make_contacts, monkeypatch
):
    # Given 300 contacts, half of them marketing
    ids = sorted(make_contacts(300).values_list("pk", flat=True))
    contacts_set_marketing(contacts=ids[:150], source=SRC)
    ledger_before = StatusChange.objects.count()
    # Each of verify's reads takes a moment, so writers commit between them.
    replay = verify_billing.ledger_replay

    def slow_replay(**kwargs):
        time.sleep(0.02)
        return replay(**kwargs)

    monkeypatch.setattr(verify_billing, "ledger_replay", slow_replay)
    done = threading.Event()

    def writer(seed):
        def run():
            rng = random.Random(seed)
            changes = 0
            while not done.is_set() and changes < WRITER_MAX_CHANGES:
                chosen = rng.sample(ids, 5)
                operation = rng.choice(["up", "up", "down", "delete"])
                if operation == "up":
                    contacts_set_marketing(contacts=chosen, source=SRC)
                elif operation == "down":
                    contacts_set_non_marketing(contacts=chosen, source=SRC)
                else:
                    contacts_delete(contacts=chosen[:1])
                changes += 1
            return changes

        return run

    def verifier():
        failures = []
        try:
            for _ in range(VERIFY_RUNS):
                try:
                    call_command("verify_billing", "--periods", "0", stdout=io.StringIO())
                except CommandError as error:
                    failures.append(str(error))
        finally:
            done.set()
        return failures

    # When verify_billing runs 10 times while three writers change statuses
    failures, *changes = run_together(verifier, writer(1), writer(2), writer(3))

    # Then every run agreed with the ledger, though the ledger moved all along
    assert failures == []
    assert all(count > 0 for count in changes)
    assert StatusChange.objects.count() > ledger_before
    out = io.StringIO()
    call_command("verify_billing", "--periods", "0", stdout=out)
    assert out.getvalue().endswith("The period agrees with the ledger.\n")


@pytest.mark.django_db(transaction=True)
def test_verify_reads_in_one_read_only_transaction(account, monkeypatch):
    # (Both databases: outside a test's own transaction, as the command runs in production.)
    seen = []
    replay = verify_billing.ledger_replay

    def observed_replay(**kwargs):
        settings = ()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SHOW transaction_isolation")
                isolation = cursor.fetchone()[0]
                cursor.execute("SHOW transaction_read_only")
                settings = (isolation, cursor.fetchone()[0])
        seen.append((connection.in_atomic_block, settings))
        return replay(**kwargs)

    monkeypatch.setattr(verify_billing, "ledger_replay", observed_replay)

    call_command("verify_billing", "--periods", "0", stdout=io.StringIO())

    expected = ("repeatable read", "on") if connection.vendor == "postgresql" else ()
    assert seen == [(True, expected), (True, expected)]
    assert not connection.in_atomic_block
