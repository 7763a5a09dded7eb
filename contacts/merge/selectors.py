"""Reads of merges: what a merge would do (its fields, status outcome and cost), and where
merged-away contacts went.

The status rule of a merge is written once, here (`merge_outcome`): the survivor is
marketing if either contact was (a contact with a pending downgrade is marketing until its
date), and a pending downgrade survives only if both had one:

- both pending → the survivor keeps its own pending date. Both dates are the end of the
  current period (a downgrade is always scheduled for the next update date, and one past
  that date is no longer pending), so there is no "later" one to pick;
- otherwise either marketing or pending → marketing, with no pending downgrade: one of the
  two records was still wanted as marketing without an end date, or was wanted as
  marketing while the other was not being marketed to at all;
- both non-marketing → non-marketing.

A merge never raises the live count (the outcome is at most one billable contact where
there were one or two), so it never raises the peak and never needs the guardrails.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.utils import timezone

from contacts.merge.models import MergedContact
from contacts.models import Contact, Source
from contacts.status.rules import is_marketing, is_pending

# Effective statuses, from the least to the most marketing.
NON_MARKETING = "non_marketing"
PENDING = "pending"
MARKETING = "marketing"
STATUS_RANK = {NON_MARKETING: 0, PENDING: 1, MARKETING: 2}
STATUS_LABELS = {
    NON_MARKETING: "non-marketing",
    PENDING: "marketing until the next update date, then non-marketing",
    MARKETING: "marketing",
}

# The fields a merge lets a person choose between the two contacts (the survivor's by
# default, the other's where the survivor's is empty). The suppression facts are not
# chosen: a merged contact is unsubscribed (or bounced) if either was, since a merge must
# never resubscribe anyone. The lead score adds up and the last engagement is the later
# one, as the engagement events they come from move to the survivor.
MERGE_FIELDS = (
    "email",
    "first_name",
    "last_name",
    "company",
    "phone",
    "lifecycle_stage",
    "lead_status",
    "contact_type",
    "source",
)

# How many merges deep the history of a survivor is followed (a survivor merged away in
# turn, and so on); far more than a person ever chains.
MERGE_CHAIN_LIMIT = 50


def merge_status(contact: Contact, at: dt.datetime) -> str:
    """A contact's effective status as a merge sees it (contacts.status.rules)."""
    if is_pending(contact.marketing_status, contact.marketing_until, at):
        return PENDING
    if is_marketing(contact.marketing_status, contact.marketing_until, at):
        return MARKETING
    return NON_MARKETING


def merge_outcome(survivor_status: str, merged_status: str) -> str:
    """The survivor's effective status after the merge (the module docstring's rule)."""
    if survivor_status == merged_status == PENDING:
        return PENDING
    if {survivor_status, merged_status} & {MARKETING, PENDING}:
        return MARKETING
    return NON_MARKETING


@dataclass(frozen=True)
class MergeField:
    name: str
    label: str
    survivor_value: object
    merged_value: object
    chosen: object

    @property
    def differs(self) -> bool:
        return self.survivor_value != self.merged_value


@dataclass
class MergePreview:
    """What merging `merged` into `survivor` would do; nothing is written."""

    survivor: Contact
    merged: Contact
    at: dt.datetime
    fields: list[MergeField]
    values: dict  # field name -> the value the survivor gets (sources as Source objects)
    survivor_status: str
    merged_status: str
    outcome_status: str
    live_count: int
    live_after: int
    peak_count: int
    refusal: str = ""  # why the merge would be refused (the locked-source rule), or ""
    extra: dict = field(default_factory=dict)  # read-only extensions (billing's cost)

    @property
    def survivor_status_changes(self) -> bool:
        return self.outcome_status != self.survivor_status

    @property
    def makes_marketing(self) -> bool:
        """The survivor's status changes toward marketing (needs the status permission)."""
        return STATUS_RANK[self.outcome_status] > STATUS_RANK[self.survivor_status]

    @property
    def outcome_label(self) -> str:
        return STATUS_LABELS[self.outcome_status]


def merge_values(survivor: Contact, merged: Contact, values: dict | None) -> dict:
    """The value of each merge field the survivor gets: the one asked for, else the
    survivor's, else (empty) the merged-away contact's. Sources are `Source` objects; an
    unknown field name or source id raises `ValueError` naming it."""
    values = dict(values or {})
    unknown = sorted(set(values) - set(MERGE_FIELDS))
    if unknown:
        raise ValueError(
            f"These fields cannot be chosen in a merge: {', '.join(unknown)}. "
            f"Choose among {', '.join(MERGE_FIELDS)}."
        )
    chosen = {}
    for name in MERGE_FIELDS:
        if name in values:
            value = values[name]
            if name == "source" and not isinstance(value, Source):
                source = Source.objects.filter(pk=_int_or_none(value)).first()
                if source is None:
                    raise ValueError(f"source: there is no source with the id {value!r}.")
                value = source
            chosen[name] = value
            continue
        mine = getattr(survivor, name)
        chosen[name] = mine if mine not in ("", None) else getattr(merged, name)
    return chosen


def _int_or_none(value) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 < number < 2**63 else None


def merge_refusal(*, survivor: Contact, outcome_status: str, survivor_status: str, source) -> str:
    """The locked-source rule of a merge, or "" when it holds.

    Contacts from a locked kind of source (mobile app, email logging, …) are always created
    non-marketing (contacts_creation_policy): only a person's explicit change of status may
    make one marketing. A merge is no such change, so it may not carry marketing onto a
    record from a locked source: when the survivor would end up from a locked source and
    marketing, and was not already both, the merge is refused. Keeping the other contact's
    source (or making the other contact the survivor) merges it.
    """
    if outcome_status == NON_MARKETING or not source.locked:
        return ""
    if survivor_status != NON_MARKETING and survivor.source_id == source.pk:
        return ""  # already a marketing contact from that source: the merge changes nothing
    return (
        f"The merged contact would be a marketing contact from “{source.name}” "
        f"({source.get_kind_display()}), a locked source whose contacts are always "
        "non-marketing. Keep the other contact's source, or set the other contact "
        "non-marketing first."
    )


def merge_preview(
    *,
    survivor: Contact,
    merged: Contact,
    values: dict | None = None,
    at: dt.datetime | None = None,
) -> MergePreview:
    """The fields side by side, the status outcome, the counts before and after, and the
    refusal if the locked-source rule forbids it. `ValueError` for unknown fields."""
    from contacts.hooks import preview_extras
    from contacts.status.results import SET_MARKETING, StatusPreview
    from contacts.status.selectors import usage_current

    now = at or timezone.now()
    chosen = merge_values(survivor, merged, values)
    survivor_status = merge_status(survivor, now)
    merged_status = merge_status(merged, now)
    outcome = merge_outcome(survivor_status, merged_status)
    billable = sum(status != NON_MARKETING for status in (survivor_status, merged_status))
    usage = usage_current(at=now)
    live_after = usage.live_count - billable + (outcome != NON_MARKETING)
    preview = MergePreview(
        survivor=survivor,
        merged=merged,
        at=now,
        fields=[
            MergeField(
                name=name,
                label=str(Contact._meta.get_field(name).verbose_name).capitalize(),
                survivor_value=getattr(survivor, name),
                merged_value=getattr(merged, name),
                chosen=chosen[name],
            )
            for name in MERGE_FIELDS
        ],
        values=chosen,
        survivor_status=survivor_status,
        merged_status=merged_status,
        outcome_status=outcome,
        live_count=usage.live_count,
        live_after=live_after,
        peak_count=usage.peak_count,
        refusal=merge_refusal(
            survivor=survivor,
            outcome_status=outcome,
            survivor_status=survivor_status,
            source=chosen["source"],
        ),
    )
    # The money, from whichever app extends status previews (billing): a merge adds no
    # marketing contact, so it is priced as a change that adds none.
    status_preview = StatusPreview(
        operation=SET_MARKETING,
        at=now,
        matched=2,
        live_count=usage.live_count,
        live_after=live_after,
        peak_count=usage.peak_count,
        peak_after=usage.peak_count,
        period_start=usage.period_start,
        period_end=usage.period_end,
    )
    preview.extra = preview_extras(status_preview)
    return preview


def merge_record_of(*, merged_id: int) -> MergedContact | None:
    """The merge that took `merged_id` away, if any (mergedcontact merged_id unique)."""
    return MergedContact.objects.filter(merged_id=merged_id).first()


def merge_survivor_of(*, contact_id: int) -> int:
    """Where a contact id lives now: itself, or the survivor it was merged into (followed
    through later merges of that survivor)."""
    current = contact_id
    for _ in range(MERGE_CHAIN_LIMIT):
        nxt = (
            MergedContact.objects.filter(merged_id=current)
            .values_list("survivor_id", flat=True)
            .first()
        )
        if nxt is None:
            return current
        current = nxt
    return current


def merged_ids_into(*, survivor_id: int) -> list[int]:
    """Every contact id merged into `survivor_id`, directly or through earlier merges of
    contacts that were merged into it (mergedcontact survivor_id index, one query a level)."""
    found: list[int] = []
    level = [survivor_id]
    for _ in range(MERGE_CHAIN_LIMIT):
        level = list(
            MergedContact.objects.filter(survivor_id__in=level).values_list("merged_id", flat=True)
        )
        if not level:
            break
        found += level
    return found
