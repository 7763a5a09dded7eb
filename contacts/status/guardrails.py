"""The guardrails (DESIGN §1.4): the hard cap and the per-operation limit.

They are checked by the status service itself, after it has taken the usage lock, on
the counters as they stand — so two guarded changes at once can never both pass a cap
that only one fits under. Every path that can make a contact marketing passes through
here with `guarded=True`: the admin, the API, workflows, imports and public intake.

A change past a guardrail writes nothing but a `PendingApproval` naming the contacts it
would make marketing (by id); billing lets a user with `billing.approve_overage` approve
it, which runs it with its original idempotency key. The settings are the account's
(`crm.models.Account.hard_cap`, `operation_limit`).
"""

from __future__ import annotations

import copy
import datetime as dt

from django.db.models import Count, QuerySet

from contacts.models import Contact
from contacts.status.models import PendingApproval
from contacts.status.results import StatusSource
from contacts.status.rules import marketing_q, settled_q
from contacts.status.sql import target_chunks
from crm.models import Account


def hold_reason(*, new_marketing: int, live_after: int, account: Account) -> str | None:
    """Why a change that makes `new_marketing` contacts marketing must wait, or None."""
    if account.operation_limit is not None and new_marketing > account.operation_limit:
        return (
            f"it would make {new_marketing:,} contacts marketing, more than the per-operation limit "
            f"of {account.operation_limit:,}"
        )
    if account.hard_cap is not None and live_after > account.hard_cap:
        return (
            f"it would take the billable count to {live_after:,}, "
            f"past the hard cap of {account.hard_cap:,}"
        )
    return None


def held_message(approval: PendingApproval) -> str:
    return (
        f"Waiting for approval #{approval.pk}: {approval.reason}. A user who may approve "
        "overage can approve or reject it under Billing › Pending approvals."
    )


def new_marketing_count(target: QuerySet | list[int], *, at: dt.datetime) -> tuple[int, int]:
    """(matched, would become marketing now) for a set-marketing of `target` at `at`.

    A pending contact is re-marked at no cost and a settled marketing contact is
    already counted, so neither is new.
    """
    matched = new = 0
    for chunk in target_chunks(target):
        counts = chunk.queryset.order_by().aggregate(
            matched=Count("pk"), billable=Count("pk", filter=marketing_q(at))
        )
        matched += counts["matched"]
        new += counts["matched"] - counts["billable"]
    return matched, new


def guardrails_check(
    *,
    target: QuerySet | list[int],
    source: StatusSource,
    actor,
    idempotency_key: str,
    fingerprint: str,
    at: dt.datetime,
    live_count: int,
    peak_count: int,
    operation_limit: bool = True,
    account: Account | None = None,
    retry: bool = True,
) -> PendingApproval | None:
    """Call with the usage lock held. The held change (new or retried), or None to go on.

    `operation_limit=False` checks the hard cap only: for one chunk of an operation whose
    whole size the caller has already checked against the per-operation limit (a
    workflow run's preflight). `account` is the account's settings if the caller has
    read them already (the limits; the counters are the arguments, read under the lock).
    `retry=False`: the key was made up for this call, so no change held earlier has it.
    """
    if retry:
        existing = PendingApproval.objects.filter(idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing
    account = copy.copy(account) if account is not None else Account.load()
    if not operation_limit:
        account.operation_limit = None
    if account.hard_cap is None and account.operation_limit is None:
        return None
    if isinstance(target, list):
        # At most every listed contact becomes marketing: when even that passes, so does
        # the exact count, which is left out (a single change's one query fewer under the lock).
        most = len(target)
        if hold_reason(new_marketing=most, live_after=live_count + most, account=account) is None:
            return None
    _, new = new_marketing_count(target, at=at)
    reason = hold_reason(new_marketing=new, live_after=live_count + new, account=account)
    if reason is None:
        return None
    queryset = (
        Contact.objects.filter(pk__in=target) if isinstance(target, list) else target.order_by()
    )
    # The contacts it would change: not marketing now, or pending (a re-mark cancels it).
    ids = list(queryset.exclude(settled_q()).order_by("pk").values_list("pk", flat=True))
    return PendingApproval.objects.create(
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        operation="set_marketing",
        contact_ids=ids,
        source_type=source.type,
        source_id=source.id,
        source_name=source.name[:200],
        requested_by=actor if getattr(actor, "pk", None) else None,
        requested_at=at,
        new_marketing=new,
        live_after=live_count + new,
        # The counters it was held at, for billing to price it.
        cost={"live_count": live_count, "peak_count": peak_count},
        reason=reason[:300],
    )
