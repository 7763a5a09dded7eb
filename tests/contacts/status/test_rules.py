"""The three forms of "effectively marketing at t" (contacts.status.rules) agree.

Random contacts — either stored status, `marketing_until` empty or a moment before, at or
after a random instant (a microsecond, a second or days away) — are written in one
transaction per example and rolled back. The `Q` (`marketing_q`), the SQL predicate
(`marketing_sql`) and the Python function (`is_marketing`) must select exactly the same
contacts at that instant, and the other forms of the rules (the complement, pending,
settled, the queryset helpers) must say the same as their Python reading.
"""

import datetime as dt

from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contacts.models import Contact
from contacts.status.rules import (
    MARKETING,
    NON_MARKETING,
    is_marketing,
    is_pending,
    is_settled,
    marketing_q,
    marketing_sql,
    not_marketing_q,
    pending_q,
    pending_sql,
    settled_q,
)
from tests.factories import SourceFactory

instants = st.datetimes(
    min_value=dt.datetime(2001, 1, 1),
    max_value=dt.datetime(2099, 12, 31),
    timezones=st.just(dt.UTC),
)
offsets = st.one_of(
    st.none(),  # no marketing_until
    st.just(dt.timedelta(0)),  # exactly the instant
    st.sampled_from([dt.timedelta(microseconds=1), dt.timedelta(seconds=1)]),
    st.sampled_from([-dt.timedelta(microseconds=1), -dt.timedelta(seconds=1)]),
    st.integers(min_value=-400, max_value=400).map(lambda days: dt.timedelta(days=days)),
)
contacts = st.lists(
    st.tuples(st.sampled_from([MARKETING, NON_MARKETING]), offsets), min_size=1, max_size=12
)


class Rollback(Exception):
    pass


def sql_ids(at: dt.datetime) -> set[int]:
    """The ids the SQL predicate selects, the instant bound as the ORM stores datetimes."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {Contact._meta.db_table} WHERE {marketing_sql()}",
            [connection.ops.adapt_datetimefield_value(at)],
        )
        return {pk for (pk,) in cursor.fetchall()}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(at=instants, rows=contacts)
def test_the_q_the_sql_and_the_python_forms_select_the_same_contacts(db, at, rows):
    try:
        with transaction.atomic():
            source = SourceFactory(name="Rules", kind="manual")
            Contact.objects.bulk_create(
                Contact(
                    email=f"r{n}@example.com",
                    source=source,
                    marketing_status=status,
                    marketing_until=None if offset is None else at + offset,
                )
                for n, (status, offset) in enumerate(rows)
            )
            stored = list(Contact.objects.values_list("pk", "marketing_status", "marketing_until"))
            everyone = {pk for pk, _, _ in stored}
            python = {pk for pk, status, until in stored if is_marketing(status, until, at)}

            assert set(Contact.objects.filter(marketing_q(at)).values_list("pk", flat=True)) == (
                python
            )
            assert sql_ids(at) == python
            assert {c.pk for c in Contact.objects.all() if c.is_billable(at)} == python
            assert set(Contact.objects.billable(at).values_list("pk", flat=True)) == python

            # The complement, by the Q and by the queryset helper
            rest = everyone - python
            assert set(
                Contact.objects.filter(not_marketing_q(at)).values_list("pk", flat=True)
            ) == (rest)
            assert set(Contact.objects.not_billable(at).values_list("pk", flat=True)) == rest

            # Pending (still marketing, leaving later) and settled (no downgrade scheduled)
            pending = {pk for pk, s, until in stored if s == MARKETING and until and until > at}
            assert set(Contact.objects.filter(pending_q(at)).values_list("pk", flat=True)) == (
                pending
            )
            assert {pk for pk, s, until in stored if is_pending(s, until, at)} == pending
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT id FROM contacts_contact WHERE {pending_sql()}",
                    [connection.ops.adapt_datetimefield_value(at)],
                )
                assert {row[0] for row in cursor.fetchall()} == pending
            assert pending <= python
            settled = {pk for pk, s, until in stored if s == MARKETING and until is None}
            assert set(Contact.objects.filter(settled_q()).values_list("pk", flat=True)) == (
                settled
            )
            assert {pk for pk, s, until in stored if is_settled(s, until)} == settled
            assert python == pending | settled
            raise Rollback
    except Rollback:
        pass


def test_the_prefix_reads_the_rule_through_a_relation(db):
    # Given a marketing contact whose downgrade lands at noon
    noon = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
    source = SourceFactory(name="Rules", kind="manual")
    Contact.objects.create(
        email="leaving@example.com", source=source, marketing_status=MARKETING, marketing_until=noon
    )
    sources = type(source).objects.filter(pk=source.pk)
    # Then, read from its source, it is marketing a microsecond before noon and not at noon
    assert sources.filter(
        marketing_q(noon - dt.timedelta(microseconds=1), prefix="contacts__")
    ).exists()
    assert not sources.filter(marketing_q(noon, prefix="contacts__")).exists()
