"""Guardrails (DESIGN §1.4): the cost preview, the hard cap and the per-operation limit.

Registered with contacts' hooks in BillingConfig.ready(): every guarded
set-marketing (bulk actions, the API, imports, workflows) is checked here
before anything is written; past a limit it is stored as a `PendingApproval`
and runs only when a user with `billing.approve_overage` approves it.
"""

from __future__ import annotations

import pickle

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from billing.locks import lock_billing
from billing.models import ApprovalStatus, PendingApproval, Subscription
from billing.pricing import price_for_peak
from contacts.hooks import GuardRequest
from contacts.models import Contact
from contacts.status.results import (
    StatusError,
    StatusSource,
)
from contacts.status.services import contacts_set_marketing


def billing_cost_preview(
    *, live_count: int, peak_count: int, would_add: int, subscription=None
) -> dict:
    """What making `would_add` more contacts marketing now does to this period's peak and invoice."""
    subscription = subscription or Subscription.load()
    before = price_for_peak(peak=peak_count, subscription=subscription)
    peak_after = max(peak_count, live_count + would_add)
    after = price_for_peak(peak=peak_after, subscription=subscription)
    return {
        "would_add": would_add,
        "peak_before": peak_count,
        "peak_after": peak_after,
        "blocks_before": before.blocks,
        "blocks_after": after.blocks,
        "total_before": before.total,
        "total_after": after.total,
        "invoice_delta": after.total - before.total,
        "headroom_before": before.headroom,
        "currency": subscription.currency,
        "hold_reason": hold_reason(
            new_marketing=would_add, live_after=live_count + would_add, subscription=subscription
        ),
    }


def preview_extension(preview) -> dict:
    """Adds the money, and whether the guardrails would hold the change, to every status
    preview (contacts.hooks.register_preview_extension)."""
    subscription = Subscription.load()
    cost = billing_cost_preview(
        live_count=preview.live_count,
        peak_count=preview.peak_count,
        would_add=preview.would_change,
        subscription=subscription,
    )
    if preview.operation != "set_marketing":
        cost["hold_reason"] = None  # only set-marketing is ever held
    if preview.operation == "set_non_marketing":
        from billing.selectors import billing_demotion_saving

        # What the downgrades it would schedule save from the next period.
        cost["next_period"] = billing_demotion_saving(demote=preview.would_schedule, at=preview.at)
    return {"cost": cost}


def hold_reason(*, new_marketing: int, live_after: int, subscription: Subscription) -> str | None:
    if subscription.operation_limit is not None and new_marketing > subscription.operation_limit:
        return (
            f"it would make {new_marketing:,} contacts marketing, more than the per-operation limit "
            f"of {subscription.operation_limit:,}"
        )
    if subscription.hard_cap is not None and live_after > subscription.hard_cap:
        return f"it would take the billable count to {live_after:,}, past the hard cap of {subscription.hard_cap:,}"
    return None


def guard(request: GuardRequest) -> str | None:
    """contacts.hooks change guard: hold a change past the guardrails as a pending approval."""
    subscription = Subscription.load()
    preview = request.preview
    reason = hold_reason(
        new_marketing=preview.would_change, live_after=preview.live_after, subscription=subscription
    )
    if reason is None:
        return None
    approval = _store(request, reason=reason, cost=preview.extra.get("cost", {}))
    return (
        f"Waiting for approval #{approval.pk}: {reason}. A user who may approve overage "
        "can approve or reject it under Billing › Pending approvals."
    )


def _store(request: GuardRequest, *, reason: str, cost: dict) -> PendingApproval:
    contacts = request.contacts
    ids = None if isinstance(contacts, QuerySet) else list(contacts)
    query = pickle.dumps(contacts.query) if isinstance(contacts, QuerySet) else None
    source: StatusSource = request.source
    actor = request.actor if getattr(request.actor, "pk", None) else None
    try:
        with transaction.atomic():
            return PendingApproval.objects.create(
                idempotency_key=request.idempotency_key,
                operation=request.operation,
                contact_ids=ids,
                contact_query=query,
                source_type=source.type,
                source_id=source.id,
                source_name=source.name,
                requested_by=actor,
                requested_at=timezone.now(),
                new_marketing=request.preview.would_change,
                live_after=request.preview.live_after,
                cost=cost,
                reason=reason[:300],
            )
    except IntegrityError:  # the same request, retried: one approval
        return PendingApproval.objects.get(idempotency_key=request.idempotency_key)


def _contacts_of(approval: PendingApproval):
    if approval.contact_ids is not None:
        return approval.contact_ids
    queryset = Contact.objects.all()
    queryset.query = pickle.loads(bytes(approval.contact_query))  # our own row, written above
    return queryset


def billing_approval_approve(*, approval: PendingApproval, user) -> PendingApproval:
    """Run the held change (once, with its original idempotency key) and log the decision."""
    with transaction.atomic():
        lock_billing()
        approval = PendingApproval.objects.select_for_update().get(pk=approval.pk)
        if approval.status != ApprovalStatus.PENDING:
            return approval
        approval.decided_by = user
        approval.decided_at = timezone.now()
        try:
            result = contacts_set_marketing(
                contacts=_contacts_of(approval),
                source=StatusSource(
                    approval.source_type, id=approval.source_id, name=approval.source_name
                ),
                actor=approval.requested_by,
                idempotency_key=approval.idempotency_key,
            )
        except StatusError as error:
            approval.status = ApprovalStatus.FAILED
            approval.result = {"error": str(error)}
        else:
            approval.status = ApprovalStatus.APPROVED
            approval.result = result.as_dict()
        approval.save()
    return approval


def billing_approval_reject(*, approval: PendingApproval, user) -> PendingApproval:
    PendingApproval.objects.filter(pk=approval.pk, status=ApprovalStatus.PENDING).update(
        status=ApprovalStatus.REJECTED, decided_by=user, decided_at=timezone.now()
    )
    approval.refresh_from_db()
    return approval
