"""The money of a change, and the decisions on changes the guardrails held (DESIGN §1.4).

The guardrails themselves (hard cap, per-operation limit) are checked by contacts'
status service under the usage lock (`contacts.status.guardrails`); what waits is a
`PendingApproval`, which a user with `billing.approve_overage` approves or rejects here.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from billing.models import Subscription
from billing.pricing import price_for_peak
from contacts.status.guardrails import hold_reason
from contacts.status.models import (
    ApprovalStatus,
    PendingApproval,
)
from contacts.status.results import (
    StatusError,
)
from contacts.status.services import contacts_release_held
from crm.locks import lock_approval, lock_usage
from crm.models import Account


def billing_cost_preview(
    *, live_count: int, peak_count: int, would_add: int, subscription=None, account=None
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
        # The tier: a screen asks to confirm a change that takes the count past it.
        "included": subscription.included_contacts,
        "currency": subscription.currency,
        "hold_reason": hold_reason(
            new_marketing=would_add,
            live_after=live_count + would_add,
            account=account or Account.load(),
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


def billing_approval_approve(*, approval: PendingApproval, user) -> PendingApproval:
    """Run the held change (once, with its original idempotency key) and log the decision."""
    with transaction.atomic():
        lock_usage()
        approval = lock_approval(approval.pk)
        if approval.status != ApprovalStatus.PENDING:
            return approval
        approval.decided_by = user
        approval.decided_at = timezone.now()
        try:
            result = contacts_release_held(approval=approval)
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
