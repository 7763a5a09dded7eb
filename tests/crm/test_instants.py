"""crm.instants: an instant from outside, with any UTC offset, is the same instant in UTC;
one with no UTC equivalent is refused; on PostgreSQL every aware datetime is sent in UTC."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client

from contacts.models import Contact
from crm.instants import InstantField, InstantOutOfRange, instant_utc
from tests.factories import ContactFactory, UserFactory

UTC = dt.UTC


def offset(hours, minutes=0):
    return dt.timezone(dt.timedelta(hours=hours, minutes=minutes))


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2026, 1, 1, 0, 0, tzinfo=offset(-16)),
        dt.datetime(2026, 1, 2, 15, 59, tzinfo=offset(23, 59)),
        dt.datetime(2026, 1, 1, 16, 0),  # naive: UTC
        dt.datetime(2026, 1, 1, 16, 0, tzinfo=UTC),
    ],
)
def test_any_offset_is_the_same_instant_in_utc(value):
    result = instant_utc(value)

    assert result.tzinfo is UTC
    assert (result.year, result.month, result.day, result.hour, result.minute) == (
        2026,
        1,
        1,
        16,
        0,
    )


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(9999, 12, 31, 23, 0, tzinfo=offset(-16)),
        dt.datetime(1, 1, 1, 0, 0, tzinfo=offset(16)),
    ],
)
def test_an_instant_with_no_utc_equivalent_is_refused(value):
    with pytest.raises(InstantOutOfRange, match="out of range"):
        instant_utc(value)


def test_the_form_field_reads_iso_8601_and_answers_utc_or_a_form_error():
    field = InstantField()

    assert field.clean("2026-01-01T00:00:00-16:00") == dt.datetime(2026, 1, 1, 16, tzinfo=UTC)
    with pytest.raises(ValidationError, match="out of range"):
        field.clean("9999-12-31T23:00:00-16:00")


@pytest.mark.postgres
def test_postgresql_is_sent_every_aware_datetime_in_utc(db):
    far_west = dt.datetime(2026, 1, 1, 0, 0, tzinfo=offset(-16))

    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::timestamptz", [far_west])
        (stored,) = cursor.fetchone()

    assert stored == dt.datetime(2026, 1, 1, 16, 0, tzinfo=UTC)


def test_an_admin_lookup_with_an_offset_past_15_59_answers(db):
    early, late = (
        ContactFactory(email="early@example.com"),
        ContactFactory(email="late@example.com"),
    )
    Contact.objects.filter(pk=early.pk).update(
        last_engaged_at=dt.datetime(2026, 1, 1, 15, 30, tzinfo=UTC)
    )
    Contact.objects.filter(pk=late.pk).update(
        last_engaged_at=dt.datetime(2026, 1, 1, 16, 30, tzinfo=UTC)
    )
    client = Client()
    client.force_login(UserFactory(username="root", is_superuser=True, is_staff=True))

    response = client.get(
        "/admin/contacts/contact/", {"last_engaged_at__gte": "2026-01-01T00:00:00-16:00"}
    )

    assert response.status_code == 200
    assert [c.email for c in response.context["cl"].result_list] == ["late@example.com"]
