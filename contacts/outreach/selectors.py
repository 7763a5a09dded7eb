"""The marketing-send guard: who may receive marketing email, and why the others are excluded."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from contacts.models import Contact
from contacts.outreach.models import (
    EmailSend,
    MarketingEmail,
    MarketingEmailStatus,
)
from contacts.selectors import contact_list
from contacts.status.rules import marketing_q


def marketing_recipients(*, contacts: QuerySet[Contact], at) -> QuerySet[Contact]:
    """THE send guard (DESIGN §1.1): who may receive marketing email.

    Marketing at `at`, not unsubscribed, not hard bounced. Every marketing send goes
    through `contacts.services.marketing_email_deliver`, which asks this at each chunk,
    so a contact that changed between the preview and the send is excluded.
    """
    return contacts.filter(marketing_q(at), unsubscribed=False, hard_bounced=False)


@dataclass(frozen=True)
class SendBreakdown:
    """Who of an audience would get a marketing email, and why the others would not.

    `excluded_*` count each excluded contact once, under a fixed precedence:
    non-marketing, then unsubscribed, then bounced (a non-marketing unsubscribed contact
    is "non-marketing"). `*_any` count every contact with that fact, overlaps included.
    `already_sent` (a send under way) are eligible contacts the email already went to
    (or was attempted for); they are not in `will_receive`.
    """

    audience: int
    will_receive: int
    excluded_non_marketing: int
    excluded_unsubscribed: int
    excluded_bounced: int
    unsubscribed_any: int
    bounced_any: int
    already_sent: int = 0

    @property
    def excluded(self) -> int:
        return self.excluded_non_marketing + self.excluded_unsubscribed + self.excluded_bounced

    def as_dict(self) -> dict:
        return {**self.__dict__, "excluded": self.excluded}


def marketing_send_breakdown(
    *, contacts: QuerySet[Contact], at=None, email: MarketingEmail | None = None
) -> SendBreakdown:
    """The breakdown in ONE aggregate query (conditional counts), never contact by contact."""
    at = at or timezone.now()
    marketing = marketing_q(at)
    eligible = marketing & Q(unsubscribed=False, hard_bounced=False)
    # The keys must not be field names ("unsubscribed" would shadow the column).
    counts = {
        "n_audience": Count("pk"),
        "n_marketing": Count("pk", filter=marketing),
        "n_unsubscribed": Count("pk", filter=marketing & Q(unsubscribed=True)),
        "n_bounced": Count("pk", filter=marketing & Q(unsubscribed=False, hard_bounced=True)),
        "n_eligible": Count("pk", filter=eligible),
        "n_unsubscribed_any": Count("pk", filter=Q(unsubscribed=True)),
        "n_bounced_any": Count("pk", filter=Q(hard_bounced=True)),
    }
    # Only an email that has sent (its counts, kept with the sends, or its status say so)
    # pays for the probe; emailsend_once (email, contact) answers each one.
    if (
        email is not None
        and email.pk
        and (email.status != MarketingEmailStatus.DRAFT or email.sent_count or email.failed_count)
    ):
        sent = Exists(EmailSend.objects.filter(email_id=email.pk, contact_id=OuterRef("pk")))
        counts["n_already"] = Count("pk", filter=eligible & Q(sent))
    row = contacts.order_by().aggregate(**counts)
    already = row.get("n_already") or 0
    return SendBreakdown(
        audience=row["n_audience"],
        will_receive=row["n_eligible"] - already,
        excluded_non_marketing=row["n_audience"] - row["n_marketing"],
        excluded_unsubscribed=row["n_unsubscribed"],
        excluded_bounced=row["n_bounced"],
        unsubscribed_any=row["n_unsubscribed_any"],
        bounced_any=row["n_bounced_any"],
        already_sent=already,
    )


def marketing_email_audience(*, email: MarketingEmail) -> QuerySet[Contact]:
    """The email's audience as a queryset: its static list, or its contact filter.

    The filter is checked strictly (a dropped filter would mail everyone): a stored
    filter that no longer validates (say, its source was deleted) raises ValidationError.
    """
    from django.core.exceptions import ValidationError
    from django.db.models.functions import Now

    from contacts.filters import ContactFilter, contact_filter_params

    if email.audience_list_id:
        # contactlist_member_once (contact_list, contact) gives the members.
        return Contact.objects.filter(list_memberships__contact_list_id=email.audience_list_id)
    params = contact_filter_params(email.audience_filter)
    filterset = ContactFilter(data=params, queryset=Contact.objects.all(), now=Now())
    if not filterset.is_valid():
        raise ValidationError({"audience_filter": filterset.errors})
    return filterset.qs


def ad_audience_members(*, audience_id: int) -> QuerySet[Contact]:
    return contact_list().filter(ad_audiences__id=audience_id)


def contact_list_members(*, contact_list_id: int) -> QuerySet[Contact]:
    return contact_list().filter(list_memberships__contact_list_id=contact_list_id)
