"""The rules of the marketing status, each written once (DESIGN §1.2, §1.4).

"Effectively marketing at instant t": the stored status is marketing and any
pending downgrade (`marketing_until`) has not yet taken effect at t. A contact
whose downgrade is due but not rolled over yet is already non-marketing; one
whose downgrade is pending still counts. Every read of the billable set uses one
of the three forms below — a Django `Q` (and its complement), an SQL predicate, or
plain Python — and a test (tests/contacts/test_status_rules.py) checks that they agree
on generated contacts.
"""

from __future__ import annotations

import datetime as dt

from django.db.models import Q

MARKETING_STATUS_PERMISSION = "contacts.change_marketing_status"

# The two stored values of `Contact.marketing_status` (contacts.models.MarketingStatus).
MARKETING = "marketing"
NON_MARKETING = "non_marketing"


def can_change_marketing_status(user) -> bool:
    """Whether a person may change the marketing status (admin and API alike)."""
    return bool(user and user.has_perm(MARKETING_STATUS_PERMISSION))


def marketing_q(at, *, prefix: str = "") -> Q:
    """Contacts effectively marketing at `at`, as a filter (`prefix` for a related model)."""
    status, until = f"{prefix}marketing_status", f"{prefix}marketing_until"
    return Q(**{status: MARKETING}) & (Q(**{f"{until}__isnull": True}) | Q(**{f"{until}__gt": at}))


def not_marketing_q(at, *, prefix: str = "") -> Q:
    """Contacts effectively non-marketing at `at`: the exact complement of `marketing_q`
    (Django's negation keeps a NULL `marketing_until` on the side it belongs to)."""
    return ~marketing_q(at, prefix=prefix)


def settled_q(*, prefix: str = "") -> Q:
    """Contacts marketing with no downgrade scheduled: what a demotion can still save.

    Marketing at any instant, and no `marketing_until` to wait for (contact_pending_idx is
    partial on `marketing_until`, so `IS NULL` reads the status column).
    """
    return Q(**{f"{prefix}marketing_status": MARKETING, f"{prefix}marketing_until__isnull": True})


def marketing_sql(*, status: str = "marketing_status", until: str = "marketing_until") -> str:
    """The same predicate in SQL over the given column expressions; `%s` takes the instant."""
    return f"({status} = '{MARKETING}' AND ({until} IS NULL OR {until} > %s))"


def pending_q(at, *, prefix: str = "") -> Q:
    """Contacts still marketing at `at` whose downgrade is scheduled for later."""
    return Q(**{f"{prefix}marketing_status": MARKETING, f"{prefix}marketing_until__gt": at})


def pending_sql(*, status: str = "marketing_status", until: str = "marketing_until") -> str:
    """`pending_q` in SQL; `%s` takes the instant."""
    return f"({status} = '{MARKETING}' AND {until} > %s)"


def is_marketing(status: str, until: dt.datetime | None, at: dt.datetime) -> bool:
    """The same predicate over one contact's stored values."""
    return status == MARKETING and (until is None or until > at)


def is_pending(status: str, until: dt.datetime | None, at: dt.datetime) -> bool:
    """`pending_q` over one contact's stored values."""
    return status == MARKETING and until is not None and until > at


def is_settled(status: str, until: dt.datetime | None) -> bool:
    """`settled_q` over one contact's stored values."""
    return status == MARKETING and until is None
