"""Hygiene: schedule the contacts a policy selects non-marketing at the next update date
(DESIGN §1.6), from the admin's wizard, the API or a policy's schedule.

Every status change goes through the status service with a `hygiene` source; billing is
reached only through the status service's hooks (the preview's `extra["cost"]`).
"""

import datetime as dt

from django.utils import timezone

from contacts.criteria import criteria_validate
from contacts.models import StatusSourceType
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_non_marketing
from crm.calendar import BillingCalendar
from crm.rows import row_get_or_create
from workflows.models import (
    HygienePolicy,
    HygieneRun,
    HygieneSchedule,
    HygieneTrigger,
)
from workflows.selectors import hygiene_preview, hygiene_selection


def hygiene_options_clean(options: dict) -> dict:
    """The options a hygiene pass takes, validated (criteria included) and canonical."""
    days = int(options.get("unengaged_days") or 90)
    if not 1 <= days <= 3_650:
        raise ValueError("unengaged_days must be between 1 and 3650.")
    tree = options.get("criteria") or {"filterGroups": []}
    return {
        "include_unsubscribed": bool(options.get("include_unsubscribed")),
        "include_hard_bounced": bool(options.get("include_hard_bounced")),
        "include_unengaged": bool(options.get("include_unengaged")),
        "unengaged_days": days,
        "criteria": criteria_validate(tree).as_json(),  # CriteriaError on a bad tree
    }


def hygiene_run(
    *,
    options: dict,
    idempotency_key: str,
    trigger: str,
    name: str = "Hygiene wizard",
    policy: HygienePolicy | None = None,
    actor=None,
    at: dt.datetime | None = None,
) -> HygieneRun:
    """Schedule the selected contacts non-marketing at the next update date (one status call).

    Only settled billable contacts are selected (marketing, no pending downgrade), so
    every match is a scheduled downgrade. The run row and the status change commit
    together under `idempotency_key`: a double submit or a retried beat finds the run
    (the unique key blocks a concurrent twin until the first commits) and changes nothing.
    """
    now = at or timezone.now()

    def create() -> HygieneRun:
        cleaned = hygiene_options_clean(options)
        run = HygieneRun.objects.create(
            policy=policy,
            name=(policy.name if policy else name)[:200],
            trigger=trigger,
            idempotency_key=idempotency_key,
            options=cleaned,
            at=now,
            actor=actor if getattr(actor, "pk", None) else None,
        )
        preview = hygiene_preview(options=cleaned, now=now)
        result = contacts_set_non_marketing(
            contacts=hygiene_selection(options=cleaned, now=now),
            source=StatusSource(
                StatusSourceType.HYGIENE,
                id=str(policy.pk) if policy else f"run-{run.pk}",
                name=run.name,
            ),
            actor=run.actor,
            idempotency_key=f"hygiene:{idempotency_key}",
            at=now,
        )
        run.matched = result.matched
        run.scheduled = result.scheduled
        run.effective_from = result.effective_from or preview.effective_from
        run.saving = preview.saving
        run.currency = preview.currency
        run.breakdown = preview.by_reason
        run.save()
        return run

    return row_get_or_create(
        HygieneRun, lookup={"idempotency_key": idempotency_key}, create=create
    )[0]


def hygiene_policy_due_key(policy: HygienePolicy, *, now: dt.datetime) -> str | None:
    """The idempotency key of the policy's scheduled run due at `now`, or None when not due.

    Before each update date: due from `days_before_update` days ahead until the date,
    one run per date. On an interval: one run per slot of `interval_days` days (slots
    counted from the epoch, so a restart never runs a slot twice).
    """
    if not policy.enabled:
        return None
    if policy.schedule == HygieneSchedule.BEFORE_UPDATE:
        next_update = BillingCalendar.for_account().next_update(now)
        if now < next_update - dt.timedelta(days=policy.days_before_update):
            return None
        return f"policy:{policy.pk}:before:{next_update.isoformat()}"
    if policy.schedule == HygieneSchedule.INTERVAL:
        slot = int(now.timestamp() // (policy.interval_days * 86_400))
        return f"policy:{policy.pk}:every:{policy.interval_days}d:{slot}"
    return None


def hygiene_policies_run_due(*, at: dt.datetime | None = None) -> list[HygieneRun]:
    """The beat's pass: run every enabled policy that is due (each once per due slot)."""
    now = at or timezone.now()
    runs = []
    for policy in HygienePolicy.objects.filter(enabled=True).order_by("pk"):
        key = hygiene_policy_due_key(policy, now=now)
        if key is None or HygieneRun.objects.filter(idempotency_key=key).exists():
            continue
        runs.append(
            hygiene_run(
                options=policy.options(),
                idempotency_key=key,
                trigger=HygieneTrigger.SCHEDULE,
                policy=policy,
                at=now,
            )
        )
    return runs
