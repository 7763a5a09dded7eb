"""crm.rows.row_get_or_create: one row per unique key, however many callers race for it."""

import threading

import pytest
from django.db import IntegrityError, transaction

from contacts.models import Source
from crm.rows import row_get_or_create
from tests.concurrency import run_together

MANUAL = {"kind": "manual", "default_marketing": False}


def test_a_missing_row_is_created_and_then_found(db):
    made, created = row_get_or_create(Source, lookup={"name": "Shop"}, defaults=MANUAL)
    found, again = row_get_or_create(Source, lookup={"name": "Shop"}, defaults={"kind": "import"})

    assert (created, again) == (True, False)
    assert found.pk == made.pk
    assert (found.kind, Source.objects.count()) == ("manual", 1)


def test_a_row_refused_by_another_constraint_raises_and_the_transaction_goes_on(db):
    # A locked kind never defaults to marketing (source_locked_kinds_never_marketing).
    with transaction.atomic():
        with pytest.raises(IntegrityError):
            row_get_or_create(
                Source,
                lookup={"name": "Phone"},
                defaults={"kind": "mobile_app", "default_marketing": True},
            )
        kept = Source.objects.create(name="Kept", **MANUAL)

    assert list(Source.objects.values_list("pk", flat=True)) == [kept.pk]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_sixteen_callers_that_all_found_no_row_get_the_one_row_inserted():
    # Every caller's read finds no row: none inserts until all sixteen have looked.
    callers = 16
    all_looked = threading.Barrier(callers)

    def create():
        all_looked.wait(timeout=10)
        return Source.objects.create(name="External forms", kind="external_form")

    def get_or_create():
        row, created = row_get_or_create(Source, lookup={"name": "External forms"}, create=create)
        return row.pk, created

    results = run_together(*[get_or_create for _ in range(callers)])

    assert len({pk for pk, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * (callers - 1) + [True]
    assert Source.objects.count() == 1
