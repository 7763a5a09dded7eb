import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from contacts.hooks import register_usage_listener, unregister_usage_listener
from contacts.models import (
    Contact,
    MarketingStatus,
    Source,
)
from contacts.services import contact_create
from contacts.status import sql
from contacts.status.models import (
    LedgerAction,
    PeriodUsage,
    StatusChange,
    StatusChangeRequest,
)
from contacts.status.results import (
    IdempotencyConflict,
    LockedSourceError,
    StatusError,
    StatusSource,
)
from contacts.status.selectors import usage_current
from contacts.status.services import (
    contacts_delete,
    contacts_rollover,
    contacts_set_marketing,
    contacts_set_non_marketing,
    contacts_status_preview,
)
from tests.conftest import at
from tests.factories import SourceFactory
from tests.replay import count_at, peak_between

NOV_5 = at(2026, 11, 5)
DEC_1 = at(2026, 12, 1)
JAN_1 = at(2027, 1, 1)


def usage():
    return PeriodUsage.objects.order_by("-period_start").first()


def test_set_marketing_takes_effect_at_once_and_counts(account, contact_factory, manual):
    contact = contact_factory()

    result = contacts_set_marketing(contacts=contact, source=manual, at=NOV_5)

    contact.refresh_from_db()
    assert contact.marketing_status == MarketingStatus.MARKETING
    assert contact.marketing_until is None
    assert (contact.marketing_reason_type, contact.marketing_reason_name) == ("manual", "test")
    assert (
        result.matched,
        result.changed,
        result.already,
        result.live_count,
        result.peak_count,
    ) == (
        1,
        1,
        0,
        1,
        1,
    )
    row = StatusChange.objects.get()
    assert (row.action, row.from_status, row.to_status, row.delta) == (
        "upgrade",
        "non_marketing",
        "marketing",
        1,
    )
    assert row.requested_at == row.effective_at == NOV_5


def test_set_non_marketing_is_deferred_to_the_next_update_date(account, contact_factory, manual):
    contact = contact_factory()
    contacts_set_marketing(contacts=contact, source=manual, at=NOV_5)

    result = contacts_set_non_marketing(contacts=contact, source=manual, at=at(2026, 11, 20))

    contact.refresh_from_db()
    assert result.scheduled == 1 and result.effective_from == DEC_1
    assert contact.is_billable(at(2026, 11, 30, 23, 59, 59))
    assert not contact.is_billable(DEC_1)
    assert contact.pending_from(at(2026, 11, 21)) == DEC_1
    assert (usage().live_count, usage().peak_count, usage().scheduled_downgrades) == (1, 1, 1)
    row = StatusChange.objects.get(action=LedgerAction.DOWNGRADE_SCHEDULED)
    assert (row.requested_at, row.effective_at, row.delta) == (at(2026, 11, 20), DEC_1, -1)
    assert usage_current(at=DEC_1).live_count == 0


def test_remarking_cancels_the_pending_downgrade_at_no_cost(account, contact_factory, manual):
    contact = contact_factory()
    contacts_set_marketing(contacts=contact, source=manual, at=NOV_5)
    contacts_set_non_marketing(contacts=contact, source=manual, at=at(2026, 11, 6))

    result = contacts_set_marketing(contacts=contact, source=manual, at=at(2026, 11, 7))

    contact.refresh_from_db()
    assert (result.changed, result.cancelled, result.already) == (0, 1, 0)
    assert contact.marketing_until is None
    assert (usage().live_count, usage().peak_count, usage().scheduled_downgrades) == (1, 1, 0)
    row = StatusChange.objects.get(action=LedgerAction.DOWNGRADE_CANCELLED)
    assert (row.effective_at, row.delta) == (DEC_1, 1)
    assert count_at(DEC_1) == 1


def test_setting_the_same_status_again_changes_nothing(account, contact_factory, manual):
    contact = contact_factory()
    contacts_set_marketing(contacts=contact, source=manual, at=NOV_5)
    contacts_set_non_marketing(contacts=contact, source=manual, at=NOV_5)

    again = contacts_set_non_marketing(contacts=contact, source=manual, at=NOV_5)
    other = contact_factory()
    never = contacts_set_non_marketing(contacts=other, source=manual, at=NOV_5)

    assert (again.scheduled, again.already) == (0, 1)
    assert (never.scheduled, never.already) == (0, 1)
    assert StatusChange.objects.count() == 2


def test_deleting_a_marketing_contact_lowers_the_live_count_but_not_the_peak(
    account, contact_factory, manual
):
    keep, gone = contact_factory.create_batch(2)
    contacts_set_marketing(contacts=[keep.pk, gone.pk], source=manual, at=NOV_5)

    result = contacts_delete(contacts=gone, at=at(2026, 11, 6))

    assert not Contact.objects.filter(pk=gone.pk).exists()
    assert result.changed == 1
    assert (usage().live_count, usage().peak_count) == (1, 2)
    row = StatusChange.objects.get(action=LedgerAction.DELETED)
    assert (row.contact_id, row.delta, row.to_status) == (gone.pk, -1, "none")
    assert StatusChange.objects.filter(contact_id=gone.pk).count() == 2  # the ledger outlives it


def test_deleting_a_pending_contact_cancels_its_downgrade_so_it_is_not_counted_twice(
    account, contact_factory, manual
):
    contact = contact_factory()
    contacts_set_marketing(contacts=contact, source=manual, at=NOV_5)
    contacts_set_non_marketing(contacts=contact, source=manual, at=NOV_5)

    contacts_delete(contacts=contact, at=at(2026, 11, 6))

    assert (usage().live_count, usage().peak_count, usage().scheduled_downgrades) == (0, 1, 0)
    assert count_at(at(2026, 11, 6)) == 0
    assert count_at(DEC_1) == 0
    assert usage_current(at=DEC_1).opening_count == 0


def test_deleting_a_non_marketing_contact_writes_no_ledger_row(account, contact_factory):
    contact = contact_factory()
    contacts_delete(contacts=contact, at=NOV_5)
    assert not Contact.objects.exists()
    assert not StatusChange.objects.exists()
    assert usage().live_count == 0


@pytest.mark.parametrize(
    ("requested", "effective"),
    [(at(2026, 11, 30, 23, 59, 59), DEC_1), (at(2026, 12, 1, 0, 0, 1), JAN_1)],
)
def test_a_downgrade_one_second_either_side_of_a_boundary(
    account, contact_factory, manual, requested, effective
):
    contact = contact_factory()
    contacts_set_marketing(contacts=contact, source=manual, at=NOV_5)

    result = contacts_set_non_marketing(contacts=contact, source=manual, at=requested)

    assert result.effective_from == effective
    contact.refresh_from_db()
    assert contact.marketing_until == effective


def test_update_day_31_defers_a_february_downgrade_to_the_28th(account, contact_factory, manual):
    account.update_day = 31
    account.save()
    contact = contact_factory()
    contacts_set_marketing(contacts=contact, source=manual, at=at(2027, 2, 1))

    result = contacts_set_non_marketing(contacts=contact, source=manual, at=at(2027, 2, 10))

    assert result.effective_from == at(2027, 2, 28)
    assert usage().period_start == at(2027, 1, 31)


def test_rollover_applies_due_downgrades_and_opens_the_next_period(
    account, contact_factory, manual
):
    stays, leaves = contact_factory.create_batch(2)
    contacts_set_marketing(contacts=[stays.pk, leaves.pk], source=manual, at=NOV_5)
    contacts_set_non_marketing(contacts=leaves, source=manual, at=at(2026, 11, 10))

    result = contacts_rollover(as_of=DEC_1, at=at(2026, 12, 1, 2))

    leaves.refresh_from_db()
    assert result.applied == 1
    assert (leaves.marketing_status, leaves.marketing_until) == ("non_marketing", DEC_1)
    assert leaves.pending_from(DEC_1) is None  # "non-marketing since", not pending
    row = StatusChange.objects.get(action=LedgerAction.ROLLOVER)
    assert (row.effective_at, row.delta) == (DEC_1, 0)
    december = PeriodUsage.objects.get(period_start=DEC_1)
    assert (december.opening_count, december.live_count, december.peak_count) == (1, 1, 1)
    november = PeriodUsage.objects.get(period_start=at(2026, 11, 1))
    assert november.peak_count == 2
    assert contacts_rollover(as_of=DEC_1, at=at(2026, 12, 1, 3)).applied == 0


def test_a_due_downgrade_not_yet_rolled_over_is_already_non_marketing(
    account, contact_factory, manual
):
    contact = contact_factory()
    contacts_set_marketing(contacts=contact, source=manual, at=NOV_5)
    contacts_set_non_marketing(contacts=contact, source=manual, at=NOV_5)

    assert usage_current(at=at(2026, 12, 2)).live_count == 0
    result = contacts_set_marketing(contacts=contact, source=manual, at=at(2026, 12, 2))

    assert (result.changed, result.cancelled) == (1, 0)
    assert StatusChange.objects.filter(action=LedgerAction.UPGRADE).count() == 2
    december = PeriodUsage.objects.get(period_start=DEC_1)
    assert (december.opening_count, december.live_count, december.peak_count) == (0, 1, 1)
    assert peak_between(DEC_1, JAN_1) == 1


def test_quiet_periods_are_opened_with_the_carried_count(account, contact_factory, manual):
    contacts_set_marketing(contacts=contact_factory(), source=manual, at=NOV_5)
    contacts_set_marketing(contacts=contact_factory(), source=manual, at=at(2027, 2, 3))
    starts = list(
        PeriodUsage.objects.order_by("period_start").values_list("period_start", "opening_count")
    )
    assert starts == [(at(2026, 11, 1), 0), (DEC_1, 1), (JAN_1, 1), (at(2027, 2, 1), 1)]


def test_a_retry_with_the_same_idempotency_key_changes_nothing(account, contact_factory, manual):
    contact = contact_factory()
    first = contacts_set_marketing(contacts=contact, source=manual, idempotency_key="k-1", at=NOV_5)
    contacts_set_non_marketing(contacts=contact, source=manual, at=at(2026, 11, 6))

    retry = contacts_set_marketing(
        contacts=contact, source=manual, idempotency_key="k-1", at=at(2026, 11, 7)
    )

    contact.refresh_from_db()
    assert retry.replayed and not first.replayed
    assert retry.as_dict() | {"replayed": False} == first.as_dict()
    assert contact.marketing_until == DEC_1  # the retry did not cancel the later downgrade
    assert StatusChange.objects.filter(action=LedgerAction.UPGRADE).count() == 1


def test_a_reused_key_for_a_different_request_is_refused(account, contact_factory, manual):
    one, two = contact_factory.create_batch(2)
    contacts_set_marketing(contacts=one, source=manual, idempotency_key="k-2", at=NOV_5)
    with pytest.raises(IdempotencyConflict):
        contacts_set_marketing(contacts=two, source=manual, idempotency_key="k-2", at=NOV_5)
    with pytest.raises(IdempotencyConflict):
        contacts_set_non_marketing(contacts=one, source=manual, idempotency_key="k-2", at=NOV_5)
    assert StatusChangeRequest.objects.count() == 1


def test_preview_counts_match_the_change_and_write_nothing(account, contact_factory, manual):
    contacts = contact_factory.create_batch(6)
    contacts_set_marketing(contacts=[c.pk for c in contacts[:4]], source=manual, at=NOV_5)
    contacts_set_non_marketing(contacts=[contacts[0].pk], source=manual, at=NOV_5)
    before = StatusChange.objects.count()

    preview = contacts_status_preview(
        contacts=Contact.objects.all(), operation="set_marketing", at=NOV_5
    )

    assert StatusChange.objects.count() == before
    assert (preview.matched, preview.would_change, preview.would_cancel, preview.already) == (
        6,
        2,
        1,
        3,
    )
    assert (preview.live_count, preview.live_after, preview.peak_after) == (4, 6, 6)
    result = contacts_set_marketing(contacts=Contact.objects.all(), source=manual, at=NOV_5)
    assert (result.changed, result.cancelled, result.already) == (2, 1, 3)

    down = contacts_status_preview(
        contacts=Contact.objects.all(), operation="set_non_marketing", at=NOV_5
    )
    assert (down.would_schedule, down.already, down.effective_from) == (6, 0, DEC_1)
    with pytest.raises(StatusError):
        contacts_status_preview(contacts=Contact.objects.all(), operation="explode")


def test_statements_per_change_do_not_grow_with_the_number_of_contacts(
    account, contact_factory, manual
):
    small = contact_factory.create_batch(3)
    large = contact_factory.create_batch(60)
    contacts_set_marketing(contacts=contact_factory(), source=manual)  # opens the period's counters

    def statements(ids, key):
        with CaptureQueriesContext(connection) as ctx:
            contacts_set_marketing(
                contacts=Contact.objects.filter(pk__in=ids), source=manual, idempotency_key=key
            )
        return len(ctx.captured_queries)

    assert statements([c.pk for c in small], "a") == statements([c.pk for c in large], "b")
    assert Contact.objects.billable(dt.datetime.now(dt.UTC)).count() == 64


def test_chunks_cover_every_contact(account, contact_factory, manual, monkeypatch):
    monkeypatch.setattr(sql, "STATUS_RANGE_BATCH", 7)
    monkeypatch.setattr(sql, "STATUS_ID_BATCH", 5)
    contacts = contact_factory.create_batch(23)
    seen = []

    result = contacts_set_marketing(
        contacts=Contact.objects.all(),
        source=manual,
        at=NOV_5,
        progress=lambda d, t: seen.append((d, t)),
    )
    by_ids = contacts_set_non_marketing(contacts=[c.pk for c in contacts], source=manual, at=NOV_5)

    assert result.changed == 23 and by_ids.scheduled == 23
    assert seen[-1][0] == seen[-1][1] >= 4
    assert usage().live_count == 23 and usage().scheduled_downgrades == 23


def test_a_range_the_caller_knows_is_cut_without_reading_its_bounds(
    account, contact_factory, manual, monkeypatch
):
    monkeypatch.setattr(sql, "STATUS_RANGE_BATCH", 4)
    contacts = contact_factory.create_batch(10)
    lo, hi = contacts[1].pk, contacts[8].pk + 1  # the middle eight
    target = Contact.objects.filter(pk__gte=lo, pk__lt=hi)

    with CaptureQueriesContext(connection) as queries:
        result = contacts_set_marketing(contacts=target, source=manual, at=NOV_5, within=(lo, hi))

    assert (result.matched, result.changed) == (8, 8)
    assert not [q for q in queries if "MIN(" in q["sql"].upper()]
    assert set(Contact.objects.filter(marketing_status=MarketingStatus.MARKETING)) == set(
        contacts[1:9]
    )
    assert usage().live_count == 8


def test_a_range_the_caller_knows_counts_the_contacts_marketing_already(
    account, contact_factory, manual, monkeypatch
):
    # Without reading the target's bounds nothing counted it: each chunk counts its rows.
    monkeypatch.setattr(sql, "STATUS_RANGE_BATCH", 3)
    contacts = contact_factory.create_batch(7)
    already, pending = contacts[1], contacts[4]
    contacts_set_marketing(contacts=[already.pk, pending.pk], source=manual, at=NOV_5)
    contacts_set_non_marketing(contacts=[pending.pk], source=manual, at=NOV_5)
    lo, hi = contacts[0].pk, contacts[-1].pk + 1
    target = Contact.objects.filter(pk__gte=lo, pk__lt=hi)

    result = contacts_set_marketing(contacts=target, source=manual, at=NOV_5, within=(lo, hi))

    assert (result.matched, result.changed, result.cancelled, result.already) == (7, 5, 1, 1)
    assert usage().live_count == 7 and usage().scheduled_downgrades == 0


def test_a_rollover_in_chunks_applies_each_due_downgrade_once(
    account, contact_factory, manual, monkeypatch
):
    monkeypatch.setattr(sql, "STATUS_RANGE_BATCH", 4)
    monkeypatch.setattr(sql, "STATUS_ID_BATCH", 3)
    contacts = contact_factory.create_batch(13)
    contacts_set_marketing(contacts=[c.pk for c in contacts], source=manual, at=NOV_5)
    november, december = contacts[:8], contacts[8:11]
    contacts_set_non_marketing(contacts=[c.pk for c in november], source=manual, at=NOV_5)
    seen = []

    first = contacts_rollover(
        as_of=DEC_1, at=at(2026, 12, 1, 2), progress=lambda d, t: seen.append((d, t))
    )
    contacts_set_non_marketing(
        contacts=[c.pk for c in december], source=manual, at=at(2026, 12, 10)
    )
    second = contacts_rollover(as_of=JAN_1, at=at(2027, 1, 1, 2))

    assert (first.applied, second.applied) == (8, 3)
    rolled = StatusChange.objects.filter(action=LedgerAction.ROLLOVER)
    assert sorted(rolled.values_list("contact_id", flat=True)) == sorted(
        c.pk for c in november + december
    )
    assert Contact.objects.filter(marketing_status=MarketingStatus.MARKETING).count() == 2
    if connection.vendor == "postgresql":
        # Cut along contact_pending_idx: 8 entries, 3 a chunk.
        assert seen[-1] == (3, 3)


def test_each_rollover_chunk_is_a_change_of_its_own_and_a_change_between_two_stands(
    account, contact_factory, manual, monkeypatch
):
    monkeypatch.setattr(sql, "STATUS_RANGE_BATCH", 3)
    monkeypatch.setattr(sql, "STATUS_ID_BATCH", 3)
    contacts = contact_factory.create_batch(8)
    ids = [c.pk for c in contacts]
    contacts_set_marketing(contacts=ids, source=manual, at=NOV_5)
    contacts_set_non_marketing(contacts=ids, source=manual, at=NOV_5)
    back = contacts[-1]  # due on December 1, in the rollover's last chunk
    chunks = []

    def between_chunks(done, total):
        chunks.append((done, total))
        if done == 1:  # the first chunk is committed; the last is not begun
            contacts_set_marketing(contacts=back, source=manual, at=at(2026, 12, 1, 2))

    result = contacts_rollover(as_of=DEC_1, at=at(2026, 12, 1, 2), progress=between_chunks)

    back.refresh_from_db()
    assert (back.marketing_status, back.marketing_until) == ("marketing", None)
    assert result.applied == 7
    assert sorted(
        StatusChange.objects.filter(action=LedgerAction.ROLLOVER).values_list(
            "contact_id", flat=True
        )
    ) == sorted(ids[:-1])
    assert list(
        StatusChange.objects.filter(contact=back).order_by("id").values_list("action", flat=True)
    ) == [LedgerAction.UPGRADE, LedgerAction.DOWNGRADE_SCHEDULED, LedgerAction.UPGRADE]
    # One request, with its own instant and result, per chunk.
    requests = StatusChangeRequest.objects.filter(operation="rollover").order_by("requested_at")
    assert len(chunks) == requests.count() >= 2
    assert sum(r.result["applied"] for r in requests) == 7
    # The change between the chunks counted once: December has one marketing contact.
    december = usage()
    assert (december.period_start, december.live_count, december.peak_count) == (DEC_1, 1, 1)
    assert count_at(at(2026, 12, 2)) == 1
    assert peak_between(DEC_1, JAN_1) == 1


@pytest.mark.postgres
def test_a_rollover_chunk_reads_only_its_stretch_of_the_pending_index(
    account, contact_factory, manual, monkeypatch
):
    monkeypatch.setattr(sql, "STATUS_ID_BATCH", 2)
    contacts = contact_factory.create_batch(7)
    contacts_set_marketing(contacts=[c.pk for c in contacts], source=manual, at=NOV_5)
    contacts_set_non_marketing(contacts=[c.pk for c in contacts[:6]], source=manual, at=NOV_5)
    due = Contact.objects.filter(
        marketing_status=MarketingStatus.MARKETING, marketing_until__lte=DEC_1
    )

    chunks = sql.pending_chunks(due, after=None, through=DEC_1)
    plan = _index_plan(chunks[1].queryset)

    assert [sorted(chunk.queryset.values_list("pk", flat=True)) for chunk in chunks] == [
        sorted(c.pk for c in contacts[k : k + 2]) for k in (0, 2, 4)
    ]
    condition = next(line for line in plan.splitlines() if "Index Cond" in line)
    assert "contact_pending_idx" in plan
    # Every downgrade is due at the period start: the chunk is that date and an id range,
    # which the index both starts and stops on (a row comparison would not stop it).
    assert "marketing_until = " in condition
    assert f"id >= {contacts[2].pk}" in condition
    assert f"id < {contacts[4].pk}" in condition
    assert "ROW(" not in condition


def _index_plan(queryset) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_bitmapscan = off")
        try:
            return queryset.explain()
        finally:
            cursor.execute("RESET enable_seqscan")
            cursor.execute("RESET enable_bitmapscan")


@pytest.mark.postgres
def test_rollover_chunks_across_two_dates_hold_each_due_contact_once(
    account, contact_factory, manual, monkeypatch
):
    """A rollover that runs late finds downgrades due at two period starts; the chunk that
    spans them is bounded by row comparisons and by its end's date."""
    monkeypatch.setattr(sql, "STATUS_ID_BATCH", 2)
    contacts = contact_factory.create_batch(5)
    contacts_set_marketing(contacts=[c.pk for c in contacts], source=manual, at=NOV_5)
    # Three due on 1 December, then two on 1 January.
    contacts_set_non_marketing(contacts=[c.pk for c in contacts[:3]], source=manual, at=NOV_5)
    contacts_set_non_marketing(
        contacts=[c.pk for c in contacts[3:]], source=manual, at=at(2026, 12, 5)
    )
    later = at(2027, 1, 15)  # the window's end, past the last date due
    due = Contact.objects.filter(
        marketing_status=MarketingStatus.MARKETING, marketing_until__lte=later
    )

    chunks = sql.pending_chunks(due, after=None, through=later)
    across = next(
        line for line in _index_plan(chunks[1].queryset).splitlines() if "Index Cond" in line
    )

    assert [sorted(chunk.queryset.values_list("pk", flat=True)) for chunk in chunks] == [
        sorted(c.pk for c in contacts[k : k + 2]) for k in (0, 2, 4)
    ]
    assert "ROW(marketing_until, id) >=" in across
    assert "ROW(marketing_until, id) <" in across
    assert "marketing_until <= '2027-01-01 00:00:00+00'" in across  # the chunk's end's date


@pytest.mark.postgres
def test_the_portable_path_gives_the_same_results_on_postgresql(
    account, contact_factory, manual, monkeypatch
):
    monkeypatch.setattr(sql, "FORCE_PORTABLE", True)
    contacts = contact_factory.create_batch(5)
    up = contacts_set_marketing(contacts=Contact.objects.all(), source=manual, at=NOV_5)
    down = contacts_set_non_marketing(
        contacts=[c.pk for c in contacts[:2]], source=manual, at=NOV_5
    )
    back = contacts_set_marketing(contacts=Contact.objects.all(), source=manual, at=NOV_5)
    assert (up.changed, down.scheduled, back.cancelled, back.already) == (5, 2, 2, 3)
    assert StatusChange.objects.count() == 9


def test_locked_sources_never_create_marketing_contacts(account):
    locked = SourceFactory(name="Phone app", kind="mobile_app")
    with pytest.raises(LockedSourceError, match="locked"):
        contact_create(email="a@example.com", source=locked, marketing=True)
    assert not Contact.objects.exists()
    contact = contact_create(email="b@example.com", source=locked)
    assert contact.marketing_status == "non_marketing"


@pytest.mark.parametrize(
    ("kind", "marketing"),
    [
        ("form", True),
        ("external_form", True),
        ("ads", True),
        ("import", False),
        ("chatflow", False),
        ("integration", False),
        ("manual", False),
        ("meetings", False),
    ],
)
def test_new_contacts_take_their_source_default(account, kind, marketing):
    source = SourceFactory(name=f"src {kind}", kind=kind)
    contact = contact_create(email="  New.Person@Example.COM ", source=source, first_name="New")
    assert contact.email == "new.person@example.com"
    assert (contact.marketing_status == "marketing") is marketing
    assert (
        StatusChange.objects.filter(contact_id=contact.pk, source_type="creation").exists()
        is marketing
    )


def test_a_permitted_creator_may_choose_marketing_for_a_manual_source(account, source):
    contact = contact_create(email="c@example.com", source=source, marketing=True)
    assert contact.marketing_status == "marketing"


def test_emails_are_unique_whatever_their_case(account, source):
    from django.core.exceptions import ValidationError

    contact_create(email="Dup@Example.com", source=source)
    with pytest.raises(ValidationError) as error:
        contact_create(email="dup@example.COM", source=source)
    assert "email" in error.value.message_dict
    assert Contact.objects.count() == 1


def test_the_usage_listener_runs_after_commit(
    account, contact_factory, manual, django_capture_on_commit_callbacks
):
    seen = []
    register_usage_listener(seen.append)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            contacts_set_marketing(contacts=contact_factory(), source=manual, at=NOV_5)
        assert [(c.live_count, c.peak_count, c.became_marketing) for c in seen] == [(1, 1, 1)]
    finally:
        unregister_usage_listener(seen.append)


def test_unknown_source_types_are_refused():
    with pytest.raises(StatusError, match="Unknown status source type"):
        StatusSource("nonsense")


def test_source_services_keep_locked_kinds_non_marketing(db):
    from django.core.exceptions import ValidationError

    from contacts.services import (
        source_create,
        source_delete,
        source_update,
    )
    from contacts.status.results import SourceInUse

    form = source_create(name="Website form", kind="form")
    assert form.default_marketing is True
    with pytest.raises(ValidationError) as error:
        source_create(name="App", kind="mobile_app", default_marketing=True)
    assert "default_marketing" in error.value.message_dict
    app = source_create(name="App", kind="mobile_app")
    with pytest.raises(ValidationError):
        source_update(source=app, default_marketing=True)
    contact_create(email="x@example.com", source=form)
    with pytest.raises(SourceInUse, match="still has contacts"):
        source_delete(source=form)
    source_delete(source=app)
    assert list(Source.objects.values_list("name", flat=True)) == ["Website form"]


@pytest.mark.parametrize("shape", ["own columns", "joined", "ids"])
def test_set_marketing_writes_each_row_by_the_contacts_old_status(
    account, contact_factory, manual, shape
):
    # On PostgreSQL a filter on the contacts table's own columns updates the upgrades in
    # place and reads only the rows with a pending downgrade (its matched count comes with
    # the target's bounds: a list of ids has none, so it reads the rows marketing now); a
    # filter through a join reads every row first. All must write the same rows and count
    # the same.
    fresh, already, pending, due = contact_factory.create_batch(4)
    contacts_set_marketing(contacts=[already.pk, pending.pk, due.pk], source=manual, at=NOV_5)
    contacts_set_non_marketing(contacts=[due.pk], source=manual, at=NOV_5)  # due on DEC_1
    contacts_set_non_marketing(contacts=[pending.pk], source=manual, at=at(2026, 12, 2))
    ids = [fresh.pk, already.pk, pending.pk, due.pk]
    target = Contact.objects.filter(pk__in=ids)
    if shape == "joined":
        target = target.filter(source__name__isnull=False)
    assert sql._single_table(target) is (shape != "joined")
    if shape == "ids":
        target = ids
    change_at = at(2026, 12, 3)  # due's downgrade is past and not rolled over yet

    result = contacts_set_marketing(contacts=target, source=manual, at=change_at)

    assert (result.matched, result.changed, result.cancelled, result.already) == (4, 2, 1, 1)
    rows = StatusChange.objects.filter(requested_at=change_at)
    assert sorted(
        rows.values_list("contact_id", "action", "from_status", "effective_at")
    ) == sorted(
        [
            (fresh.pk, LedgerAction.UPGRADE, "non_marketing", change_at),
            (due.pk, LedgerAction.UPGRADE, "non_marketing", change_at),
            (pending.pk, LedgerAction.DOWNGRADE_CANCELLED, "non_marketing", JAN_1),
        ]
    )
    assert set(
        Contact.objects.filter(pk__in=ids).values_list("marketing_status", "marketing_until")
    ) == {(MarketingStatus.MARKETING, None)}
    assert usage().live_count == 4
