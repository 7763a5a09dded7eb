"""Every select_for_update of billing, in one place, taken in one order.

1. `lock_billing()` — the subscription row. It serialises closes (two workers
   closing at once: the second waits, then finds the period closed) and
   guardrail decisions.
2. The usage lock of `contacts` (`UsageState`), taken inside the contacts
   services that billing calls while holding (1).

Nothing takes (1) while holding (2), so the two never deadlock.
"""

from billing.models import Subscription


def lock_billing() -> Subscription:
    Subscription.load()
    return Subscription.objects.select_for_update().get(pk=Subscription.SINGLETON_PK)
