"""The one marketing-status service (DESIGN §1.2).

Every status change — a person, a bulk action, the API, an import, a form, a
workflow, the rollover — goes through `contacts_set_marketing`,
`contacts_set_non_marketing`, `contacts_delete` or `contacts_rollover`. Each call:

1. takes the usage lock (`crm.locks.lock_usage`) so changes and their counters
   are serialised and the change clock never runs backwards;
2. answers a retried idempotency key with the stored result, changing nothing;
3. works set-based, chunk by chunk (`contacts.status.sql`) — never a save() per contact;
4. updates the period's live count and running peak with F()/GREATEST in the
   same transaction, O(1) however many contacts exist.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from contacts.hooks import UsageChange, notify_usage_changed, preview_extras
from contacts.models import (
    Contact,
    MarketingStatus,
    StatusSourceType,
)
from contacts.outreach.models import AdAudienceMembership
from contacts.status.guardrails import guardrails_check, held_message
from contacts.status.metrics import status_changes_count
from contacts.status.models import (
    LedgerAction,
    PendingApproval,
    PeriodUsage,
    StatusChange,
    StatusChangeRequest,
    UsageState,
)
from contacts.status.results import (
    DELETE,
    ROLLOVER,
    SET_MARKETING,
    SET_NON_MARKETING,
    ChangeHeld,
    IdempotencyConflict,
    Progress,
    StatusChangeResult,
    StatusError,
    StatusPreview,
    StatusSource,
    Target,
)
from contacts.status.rules import pending_q, settled_q
from contacts.status.selectors import status_clock
from contacts.status.sql import (
    Chunk,
    OperationSql,
    as_target,
    delete_rows,
    finish_writes,
    ledger_select,
    operation_sql,
    pending_chunks,
    request_fingerprint,
    run_chunk_portable,
    run_chunk_postgresql,
    target_chunks,
    target_chunks_counted,
    upgrades_in_place,
    use_postgresql_fast_path,
)
from crm.calendar import BillingCalendar
from crm.locks import lock_usage
from crm.models import Account

logger = logging.getLogger(__name__)


TICK = dt.timedelta(microseconds=1)


def _lock_usage(
    at: dt.datetime | None, calendar: BillingCalendar
) -> tuple[UsageState, dt.datetime]:
    """Take the usage lock and return this change's instant.

    Instants strictly increase from one change to the next, and never fall exactly
    on a period start (that instant belongs to the boundary's own downgrades). So
    the ledger's order is the order the counters saw, and a replay grouped by
    instant sees exactly the counts the counters saw.
    """
    state = lock_usage()
    now = at or timezone.now()
    if state.last_change_at and now <= state.last_change_at:
        now = state.last_change_at + TICK
    if calendar.period_bounds(now)[0] == now:
        now += TICK
    return state, now


def period_usage_at(now: dt.datetime, calendar: BillingCalendar) -> PeriodUsage:
    """The counter row of the period containing `now`, opening any periods since the last one.

    Call with the usage lock held. A period opens with the previous period's live
    count less the downgrades scheduled for its end.
    """
    start, end = calendar.period_bounds(now)
    row = PeriodUsage.objects.filter(period_start=start).first()
    if row is not None:
        return row
    latest = PeriodUsage.objects.filter(period_start__lt=start).order_by("-period_start").first()
    if latest is None:
        return PeriodUsage.objects.create(period_start=start, period_end=end)
    opening = latest.live_count - latest.scheduled_downgrades
    next_start = latest.period_end
    while next_start <= start:
        next_end = calendar.following(next_start)
        row = PeriodUsage.objects.create(
            period_start=next_start,
            period_end=next_end,
            opening_count=opening,
            live_count=opening,
            peak_count=opening,
        )
        next_start = next_end
    return row


def _replay(
    *, operation: str, idempotency_key: str | None, fingerprint: str
) -> StatusChangeResult | None:
    """The stored result of a retried request (same key), or None for a new one."""
    if not idempotency_key:
        return None
    existing = StatusChangeRequest.objects.filter(idempotency_key=idempotency_key).first()
    if existing is None:
        return None
    if existing.fingerprint != fingerprint or existing.operation != operation:
        raise IdempotencyConflict(
            f"The idempotency key {idempotency_key!r} was already used for a different request."
        )
    result = StatusChangeResult.from_dict(existing.result)
    result.replayed = True
    return result


def _begin(
    *,
    operation: str,
    source: StatusSource,
    actor,
    idempotency_key: str | None,
    fingerprint: str,
    now: dt.datetime,
) -> StatusChangeRequest:
    return StatusChangeRequest.objects.create(
        idempotency_key=idempotency_key or f"auto:{uuid.uuid4()}",
        operation=operation,
        fingerprint=fingerprint,
        source_type=source.type,
        source_id=source.id,
        source_name=source.name[:200],
        actor=actor if getattr(actor, "pk", None) else None,
        requested_at=now,
    )


def _finish(
    *,
    request: StatusChangeRequest,
    calendar: BillingCalendar,
    state: UsageState,
    usage: PeriodUsage,
    result: StatusChangeResult,
    live_delta: int,
    scheduled_delta: int,
) -> StatusChangeResult:
    # The row was read under the usage lock and only changes under it, so the counters
    # after this change are known here exactly as the UPDATE below computes them.
    usage.live_count += live_delta
    usage.peak_count = max(usage.peak_count, usage.live_count)
    usage.scheduled_downgrades += scheduled_delta
    result.live_count = usage.live_count
    result.peak_count = usage.peak_count
    state.last_change_at = result.requested_at
    request.result = result.as_dict()
    finish_writes(
        usage_id=usage.pk,
        live_delta=live_delta,
        scheduled_delta=scheduled_delta,
        state_id=state.pk,
        last_change_at=state.last_change_at,
        request_id=request.pk,
        result=request.result,
    )
    if live_delta or scheduled_delta:
        change = UsageChange(
            operation=result.operation,
            at=result.requested_at,
            day=result.requested_at.astimezone(calendar.tz).date(),
            period_start=usage.period_start,
            live_count=usage.live_count,
            peak_count=usage.peak_count,
            became_marketing=max(live_delta, 0),
        )
        transaction.on_commit(lambda: notify_usage_changed(change))
    return result


def _change_status(
    operation: str,
    *,
    contacts: Target,
    source: StatusSource,
    actor,
    idempotency_key: str | None,
    at: dt.datetime | None,
    progress: Progress | None,
    guarded: bool = False,
    operation_limit: bool = True,
    fingerprint: str = "",
    within: tuple[int, int] | None = None,
) -> StatusChangeResult:
    target = as_target(contacts)
    fingerprint = fingerprint or request_fingerprint(operation, source, target)
    # The account's settings (calendar, guardrail limits) are read before the lock: they
    # do not depend on the counters, and every statement under the lock makes the queue wait.
    account = Account.load()
    calendar = BillingCalendar.for_account(account)
    guarded = guarded and operation == SET_MARKETING
    # Without a caller's key there is no earlier request (nor held change) to look up.
    keyed = bool(idempotency_key)
    if guarded and not keyed:
        idempotency_key = f"auto:{uuid.uuid4()}"
    held = None
    with transaction.atomic():
        state, now = _lock_usage(at, calendar)
        if keyed:
            replay = _replay(
                operation=operation, idempotency_key=idempotency_key, fingerprint=fingerprint
            )
            if replay is not None:
                return replay
        usage = period_usage_at(now, calendar)
        if guarded:
            held = guardrails_check(
                target=target,
                source=source,
                actor=actor,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
                at=now,
                live_count=usage.live_count,
                peak_count=usage.peak_count,
                operation_limit=operation_limit,
                account=account,
                retry=keyed,
            )
        if held is None:
            result = _write(
                operation,
                calendar=calendar,
                target=target,
                source=source,
                actor=actor,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
                state=state,
                usage=usage,
                now=now,
                progress=progress,
                within=within,
            )
    # Raised after the block, so the held change's row is kept (by this transaction, or by
    # the caller's if it catches ChangeHeld) while nothing of the change itself is written.
    if held is not None:
        raise ChangeHeld(held_message(held), reason=held.reason)
    return result


def _write(
    operation: str,
    *,
    calendar: BillingCalendar,
    target,
    source: StatusSource,
    actor,
    idempotency_key: str | None,
    fingerprint: str,
    state: UsageState,
    usage: PeriodUsage,
    now: dt.datetime,
    progress: Progress | None,
    within: tuple[int, int] | None = None,
) -> StatusChangeResult:
    """The change itself, with the usage lock held: ledger rows, contacts, counters."""
    request = _begin(
        operation=operation,
        source=source,
        actor=actor,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        now=now,
    )
    until = usage.period_end

    def specs_for_chunk() -> list[OperationSql]:
        if operation == DELETE:
            return delete_rows(now)
        return [operation_sql(operation, now=now, until=until, source=source)]

    counts = _apply(
        target,
        specs_for_chunk,
        now=now,
        source=source,
        request_id=request.pk,
        actor_id=request.actor_id,
        delete=operation == DELETE,
        progress=progress,
        chunks=target_chunks(target, within=within) if within else None,
    )
    result = StatusChangeResult(
        operation=operation,
        idempotency_key=request.idempotency_key,
        requested_at=now,
        matched=counts.get("matched", 0),
    )
    upgraded = counts.get(LedgerAction.UPGRADE, 0)
    cancelled = counts.get(LedgerAction.DOWNGRADE_CANCELLED, 0)
    scheduled = counts.get(LedgerAction.DOWNGRADE_SCHEDULED, 0)
    deleted = counts.get(LedgerAction.DELETED, 0)
    if operation == SET_MARKETING:
        result.changed, result.cancelled = upgraded, cancelled
        result.already = result.matched - upgraded - cancelled
    elif operation == SET_NON_MARKETING:
        result.scheduled = scheduled
        result.already = result.matched - scheduled
        result.effective_from = until if scheduled else None
    elif operation == DELETE:
        result.changed = result.matched
        result.cancelled = cancelled
    return _finish(
        request=request,
        calendar=calendar,
        state=state,
        usage=usage,
        result=result,
        live_delta=upgraded - deleted,
        scheduled_delta=scheduled - cancelled,
    )


def _apply(
    target,
    specs_for_chunk: Callable[[], list[OperationSql]],
    *,
    now,
    source: StatusSource,
    request_id: int,
    actor_id,
    delete: bool,
    progress: Progress | None,
    chunks: list[Chunk] | None = None,
) -> dict[str, int]:
    """Run the operation chunk by chunk (`target`'s, unless the caller cut them); return
    the matched count and ledger rows by action."""
    totals: dict[str, int] = {"matched": 0}
    fast = not delete and use_postgresql_fast_path()
    counted = None  # the target's rows, when read with its bounds
    if chunks is None:
        if fast and upgrades_in_place(target, specs_for_chunk()[0]):
            chunks, counted = target_chunks_counted(target)
        else:
            chunks = target_chunks(target)
    for done, chunk in enumerate(chunks, start=1):
        specs = specs_for_chunk()
        selects = [
            ledger_select(spec, request_id=request_id, now=now, source=source, actor_id=actor_id)
            for spec in specs
        ]
        if fast:
            written = run_chunk_postgresql(chunk, specs[0], selects[0], counted=counted is not None)
            for key, value in written.items():
                totals[key] = totals.get(key, 0) + value
        else:
            totals["matched"] += run_chunk_portable(
                chunk.queryset, specs, selects, update=not delete
            )
            if delete:
                chunk.queryset.delete()
        if progress:
            progress(done, len(chunks))
    if counted is not None:
        # The chunks counted the rows they changed. The count and the chunks read the
        # target at different instants (the usage lock holds statuses still, not the other
        # columns): a contact that joined the target in between was changed all the same
        # and is matched too; one that left it is matched and counted as already marketing.
        totals["matched"] = max(counted, totals["matched"])
    if not fast:
        # Rows of this request by action (statuschange_once_per_request index).
        rows = (
            StatusChange.objects.filter(request_id=request_id)
            .values("action")
            .annotate(n=Count("id"))
        )
        totals.update({row["action"]: row["n"] for row in rows})
    transaction.on_commit(lambda: status_changes_count(totals))
    return totals


def contacts_set_marketing(
    *,
    contacts: Target,
    source: StatusSource,
    actor=None,
    idempotency_key: str | None = None,
    at: dt.datetime | None = None,
    progress: Progress | None = None,
    guarded: bool = False,
    operation_limit: bool = True,
    within: tuple[int, int] | None = None,
) -> StatusChangeResult:
    """Make contacts marketing now; a pending downgrade is cancelled at no extra cost.

    `at` is for the demo seeder and tests: the change instant, clamped so it never
    precedes the last recorded change. `guarded=True` (bulk actions, the API,
    imports, workflows, intake) checks the guardrails under the usage lock: past the
    hard cap or the per-operation limit the change is held for approval
    (`contacts.status.guardrails`), `ChangeHeld` is raised and nothing else is written.
    `operation_limit=False` leaves out the per-operation limit (the hard cap still holds)
    for a chunk of an operation already checked whole. `within` = (lo, hi): a queryset's
    caller knows its ids lie in [lo, hi), so its chunks are cut there without reading the
    ids' MIN and MAX first (a workflow run's chunk).
    """
    return _change_status(
        SET_MARKETING,
        contacts=contacts,
        source=source,
        actor=actor,
        idempotency_key=idempotency_key,
        at=at,
        progress=progress,
        guarded=guarded,
        operation_limit=operation_limit,
        within=within,
    )


def contacts_release_held(*, approval: PendingApproval) -> StatusChangeResult:
    """Run a change the guardrails held, now approved: on the contacts it named, with its
    original idempotency key, source and requester, unguarded. Billing decides when; a
    retry of the original request then replays this result."""
    return _change_status(
        SET_MARKETING,
        contacts=approval.contact_ids or [],
        source=StatusSource(approval.source_type, id=approval.source_id, name=approval.source_name),
        actor=approval.requested_by,
        idempotency_key=approval.idempotency_key,
        at=None,
        progress=None,
        fingerprint=approval.fingerprint,
    )


def contacts_set_non_marketing(
    *,
    contacts: Target,
    source: StatusSource,
    actor=None,
    idempotency_key: str | None = None,
    at: dt.datetime | None = None,
    progress: Progress | None = None,
) -> StatusChangeResult:
    """Schedule contacts non-marketing from the next update date; they stay billable until then."""
    return _change_status(
        SET_NON_MARKETING,
        contacts=contacts,
        source=source,
        actor=actor,
        idempotency_key=idempotency_key,
        at=at,
        progress=progress,
    )


def contacts_delete(
    *,
    contacts: Target,
    actor=None,
    source: StatusSource | None = None,
    idempotency_key: str | None = None,
    at: dt.datetime | None = None,
    progress: Progress | None = None,
) -> StatusChangeResult:
    """Delete contacts; billable ones lower the live count at once (the peak stays)."""
    return _change_status(
        DELETE,
        contacts=contacts,
        source=source or StatusSource(StatusSourceType.DELETION),
        actor=actor,
        idempotency_key=idempotency_key,
        at=at,
        progress=progress,
    )


def contacts_rollover(
    *,
    as_of: dt.datetime | None = None,
    at: dt.datetime | None = None,
    progress: Progress | None = None,
) -> StatusChangeResult:
    """Apply every pending downgrade due at or before `as_of` (default: now).

    Billable counts do not move (the ledger counted each downgrade at its date
    when it was scheduled); the stored status catches up and each contact gets a
    "rollover" ledger row. Also opens the counter rows of every period up to `as_of`.
    Idempotent: a second run finds nothing due. `as_of` is capped at the
    present (`at`, for tests, or the clock): nothing is applied early.

    Each chunk of due contacts is a change of its own — its transaction, the usage lock,
    a request row — so status changes wait for one chunk, never for the whole rollover
    (a million downgrades at 10,000,000 contacts). A due contact changed between two
    chunks is changed as any due contact is (its downgrade has taken effect: making it
    marketing is an upgrade), and the chunk that reaches it afterwards skips it. The last
    transaction records how far the rollover went (`rolled_over_through`); a rollover
    stopped before that finds the rest still due, and no more.
    """
    source = StatusSource(StatusSourceType.ROLLOVER, name="Period rollover")
    calendar = BillingCalendar.for_account()
    present = status_clock(at=at)
    as_of = min(as_of or present, present)
    after = UsageState.objects.filter(pk=1).values_list("rolled_over_through", flat=True).first()
    due = Contact.objects.filter(
        marketing_status=MarketingStatus.MARKETING, marketing_until__lte=as_of
    )
    if after is not None:
        # Downgrades are always scheduled after the instant they are asked for, and
        # instants only grow, so none falls at or before the last rollover's as_of.
        due = due.filter(marketing_until__gt=after)
    # Read once, outside the lock: no contact becomes due meanwhile (a new downgrade is
    # scheduled after the present), so these chunks hold every due contact.
    chunks = (
        pending_chunks(due, after=after, through=as_of)
        if use_postgresql_fast_path()
        else target_chunks(due)
    )
    spec = operation_sql(ROLLOVER, now=as_of, until=None, source=source)
    fingerprint = request_fingerprint(ROLLOVER, source, [], extra=as_of.isoformat())
    steps: list[Chunk | None] = [*chunks] or [None]
    # A due contact is non-marketing already, so no audience takes it in meanwhile: with no
    # audience members now, no chunk has any to remove (and skips a read of its contacts).
    members = AdAudienceMembership.objects.exists()
    matched = applied = 0
    for number, chunk in enumerate(steps, start=1):
        with transaction.atomic():
            state, now = _lock_usage(at, calendar)
            request = _begin(
                operation=ROLLOVER,
                source=source,
                actor=None,
                idempotency_key=None,
                fingerprint=fingerprint,
                now=now,
            )
            usage = period_usage_at(now, calendar)
            if chunk is not None and members:
                _leave_ad_audiences(chunk.queryset)
            totals = _apply(
                due,
                lambda: [spec],
                now=now,
                source=source,
                request_id=request.pk,
                actor_id=None,
                delete=False,
                progress=None,
                chunks=[chunk] if chunk is not None else [],
            )
            matched += totals.get("matched", 0)
            applied += totals.get(LedgerAction.ROLLOVER, 0)
            last = number == len(steps)
            if last and (state.rolled_over_through is None or as_of > state.rolled_over_through):
                state.rolled_over_through = as_of
                state.save(update_fields=["rolled_over_through"])
            result = _finish(
                request=request,
                calendar=calendar,
                state=state,
                usage=usage,
                result=StatusChangeResult(
                    operation=ROLLOVER,
                    idempotency_key=request.idempotency_key,
                    requested_at=now,
                    matched=totals.get("matched", 0),
                    applied=totals.get(LedgerAction.ROLLOVER, 0),
                    effective_from=as_of,
                ),
                live_delta=0,
                scheduled_delta=0,
            )
        if progress:
            progress(number, len(steps))
    # The whole rollover's counts; the rest (instant, counters) is its last change's.
    result.matched, result.applied = matched, applied
    return result


def _leave_ad_audiences(contacts) -> int:
    """Ad audiences hold marketing contacts only (DESIGN §1.1): a rollover chunk's contacts,
    whose downgrade it is about to apply under the same lock, leave every audience in one
    DELETE (adaudience memberships have nothing depending on them, so Django deletes
    without reading the rows first). A chunk at a time, so no transaction reads all the
    contacts a rollover makes non-marketing."""
    removed, _ = AdAudienceMembership.objects.filter(contact__in=contacts.values("pk")).delete()
    if removed:
        logger.info(
            "rollover: %s ad audience memberships of non-marketing contacts removed", removed
        )
    return removed


def contacts_status_preview(
    *, contacts: Target, operation: str, at: dt.datetime | None = None, additional: int = 0
) -> StatusPreview:
    """Counts of what a set-marketing or set-non-marketing would do; nothing is written.

    `additional` (set-marketing only) counts contacts that do not exist yet but would be
    created and made marketing by the same operation — an import's new rows: they are
    matched and would change, so the preview's extensions (billing's cost) price them too.
    """
    if operation not in (SET_MARKETING, SET_NON_MARKETING):
        raise StatusError(
            f"Unknown operation {operation!r}; use set_marketing or set_non_marketing."
        )
    if additional and operation != SET_MARKETING:
        raise StatusError("Only a set-marketing preview can count contacts not created yet.")
    from contacts.status.selectors import usage_current

    target = as_target(contacts)
    now = at or timezone.now()
    usage = usage_current(at=now)
    preview = StatusPreview(
        operation=operation,
        at=now,
        live_count=usage.live_count,
        peak_count=usage.peak_count,
        period_start=usage.period_start,
        period_end=usage.period_end,
    )
    pending = pending_q(now)
    billable_settled = settled_q()
    chunks = target_chunks(target)
    for chunk in chunks:
        counts = chunk.queryset.order_by().aggregate(
            matched=Count("pk"),
            pending=Count("pk", filter=pending),
            settled=Count("pk", filter=billable_settled),
        )
        preview.matched += counts["matched"]
        if operation == SET_MARKETING:
            preview.would_cancel += counts["pending"]
            preview.already += counts["settled"]
            preview.would_change += counts["matched"] - counts["pending"] - counts["settled"]
        else:
            preview.would_schedule += counts["settled"]
            preview.already += counts["matched"] - counts["settled"]
    preview.matched += additional
    preview.would_change += additional
    if operation == SET_NON_MARKETING and preview.would_schedule:
        preview.effective_from = usage.period_end
    preview.live_after = preview.live_count + preview.would_change
    preview.peak_after = max(preview.peak_count, preview.live_after)
    preview.extra = preview_extras(preview)
    return preview
