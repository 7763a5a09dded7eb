"""The worked examples of ../shared/EXAMPLES.md as test vectors."""

import datetime as dt
import zoneinfo

from billing.models import Subscription
from billing.pricing import overage_blocks
from contacts.models import Contact
from contacts.status.models import PeriodUsage
from contacts.status.results import StatusSource
from contacts.status.selectors import usage_current
from contacts.status.services import (
    contacts_delete,
    contacts_rollover,
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from tests.factories import SourceFactory
from tests.replay import peak_between

STOCKHOLM = zoneinfo.ZoneInfo("Europe/Stockholm")
SOURCE = StatusSource("import", name="example")


def local(month, day, hour=0):
    return dt.datetime(2026, month, day, hour, tzinfo=STOCKHOLM)


def add_contacts(source, first, count):
    Contact.objects.bulk_create(
        Contact(email=f"c{n}@example.com", source=source) for n in range(first, first + count)
    )
    return Contact.objects.filter(
        email__in=[f"c{n}@example.com" for n in range(first, first + count)]
    )


def test_one_month_step_by_step(account):
    account.update_day = 15
    account.time_zone = "Europe/Stockholm"
    account.save()
    source = SourceFactory(name="Example", kind="import")
    p_start, p_end = local(11, 15), local(12, 15)

    opening = add_contacts(source, 0, 1_900)
    contacts_set_marketing(contacts=opening, source=SOURCE, at=local(11, 10))
    assert usage_current(at=p_start).live_count == 1_900

    contacts_set_marketing(
        contacts=add_contacts(source, 1_900, 300), source=SOURCE, at=local(11, 16)
    )
    u = usage_current(at=local(11, 16))
    assert (u.live_count, u.pending_downgrades, u.peak_count) == (2_200, 0, 2_200)

    leaving = list(Contact.objects.order_by("pk").values_list("pk", flat=True)[:500])
    contacts_set_non_marketing(contacts=leaving, source=SOURCE, at=local(11, 20))
    u = usage_current(at=local(11, 20))
    assert (u.live_count, u.pending_downgrades, u.peak_count) == (2_200, 500, 2_200)

    contacts_set_marketing(contacts=leaving[:100], source=SOURCE, at=local(11, 25))
    u = usage_current(at=local(11, 25))
    assert (u.live_count, u.pending_downgrades, u.peak_count) == (2_200, 400, 2_200)

    others = list(Contact.objects.order_by("-pk").values_list("pk", flat=True)[:50])
    contacts_delete(contacts=others, at=local(11, 28))
    u = usage_current(at=local(11, 28))
    assert (u.live_count, u.pending_downgrades, u.peak_count) == (2_150, 400, 2_200)

    contacts_set_marketing(
        contacts=add_contacts(source, 10_000, 4_000), source=SOURCE, at=local(12, 1)
    )
    u = usage_current(at=local(12, 1))
    assert (u.live_count, u.pending_downgrades, u.peak_count) == (6_150, 400, 6_150)

    rollover = contacts_rollover(as_of=p_end, at=p_end)
    assert rollover.applied == 400
    period = PeriodUsage.objects.get(period_start=p_start)
    following = PeriodUsage.objects.get(period_start=p_end)
    assert (period.peak_count, following.opening_count, following.peak_count) == (
        6_150,
        5_750,
        5_750,
    )
    assert peak_between(p_start, p_end) == 6_150
    assert period.period_start == dt.datetime(2026, 11, 14, 23, tzinfo=dt.UTC)

    subscription = Subscription.load()
    blocks = overage_blocks(
        peak=period.peak_count,
        included=subscription.included_contacts,
        block_size=subscription.block_size,
    )
    assert blocks == 1
    assert subscription.base_price + blocks * subscription.block_price == 102_500


def test_block_arithmetic():
    table = [(0, 0), (2_000, 0), (2_001, 1), (7_000, 1), (7_001, 2), (1_002_000, 200)]
    assert [overage_blocks(peak=p, included=2_000, block_size=5_000) for p, _ in table] == [
        b for _, b in table
    ]


def test_flip_flops_count_a_contact_once(account):
    source = SourceFactory(name="Flip", kind="manual")
    contact = add_contacts(source, 0, 1).get()
    day = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
    for hours, operation in enumerate(
        [
            contacts_set_marketing,
            contacts_set_non_marketing,
            contacts_set_marketing,
            contacts_set_non_marketing,
        ]
    ):
        operation(contacts=contact, source=SOURCE, at=day + dt.timedelta(hours=hours))
    u = usage_current(at=day + dt.timedelta(hours=5))
    assert (u.live_count, u.peak_count, u.pending_downgrades) == (1, 1, 1)


def test_delete_and_recreate_inside_a_period_raises_the_peak_by_one(account):
    source = SourceFactory(name="Recreate", kind="manual")
    day = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
    contacts_set_marketing(contacts=add_contacts(source, 0, 1), source=SOURCE, at=day)
    contacts_delete(contacts=Contact.objects.all(), at=day + dt.timedelta(hours=1))
    contacts_set_marketing(
        contacts=add_contacts(source, 0, 1), source=SOURCE, at=day + dt.timedelta(hours=2)
    )
    u = usage_current(at=day + dt.timedelta(hours=3))
    assert (u.live_count, u.peak_count) == (1, 1)
