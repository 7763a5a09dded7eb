"""Changing the subscription's prices and the billing calendar (DESIGN §1.4).

The admin pages and the API apply the same rules: the models' own (`full_clean`: whole
numbers from 0, a block of at least 1 contact, an update day from 1 to 31, a known time
zone). Each change takes the billing lock (crm/locks.py), so it never lands in the middle
of a close, which prices and dates the period under that lock.
"""

from __future__ import annotations

from django.db import transaction

from billing.models import Subscription
from crm.locks import lock_billing
from crm.models import Account

SUBSCRIPTION_FIELDS = ("included_contacts", "base_price", "block_size", "block_price", "currency")
CALENDAR_FIELDS = ("update_day", "yearly_plan", "time_zone")


def _apply(instance, changes: dict, allowed: tuple[str, ...]) -> list[str]:
    unknown = set(changes) - set(allowed)
    if unknown:
        raise ValueError(f"Not changeable here: {', '.join(sorted(unknown))}.")
    changed = [name for name, value in changes.items() if getattr(instance, name) != value]
    for name in changed:
        setattr(instance, name, changes[name])
    # Raises ValidationError with the messages per field; nothing is saved.
    instance.full_clean()
    return changed


def subscription_update(**changes) -> Subscription:
    """Change the tier, prices or currency (money in integer minor units)."""
    with transaction.atomic():
        subscription = lock_billing()
        changed = _apply(subscription, changes, SUBSCRIPTION_FIELDS)
        if changed:
            subscription.save(update_fields=[*changed, "updated_at"])
    return subscription


def calendar_update(**changes) -> Account:
    """Change the update day, the yearly plan switch or the time zone. The current period's
    bounds follow at once; change it between periods."""
    with transaction.atomic():
        lock_billing()
        account = Account.load()
        changed = _apply(account, changes, CALENDAR_FIELDS)
        if changed:
            account.save(update_fields=[*changed, "updated_at"])
    return account
