"""The demo's story: three closed months and the current one, told through every app's services.

The contacts app loads the contacts and their engagement (`contacts.demo`); this module adds
what only the other apps can: the scoring rules and the lead scores they give (workflows),
the marketing-contact definition as an enrollment and an exclusion workflow (workflows), the
tier, and each month closed with its invoice (billing). `contacts` may import neither app,
so the story lives here, in crm, which the command (crm's `seed_demo`) alone imports.

In time order, each change through the status service at its own instant, and each month
closed by billing's close service with the clock an hour (at most) after its end:

- three months ago: the contacts of marketing sources become marketing, then the qualified
  leads the definition's first group selects (the exclusion workflow keeps the unsubscribed
  and bounced out); the tier is sized to that month's count, and the month closes;
- two months ago: the unsubscribed and bounced are scheduled non-marketing, a few marketing
  contacts are deleted; the close applies the downgrades;
- last month: the engaged subscribers and leads the definition's second group selects become
  marketing, past the tier: an overage block and its alerts; the close;
- this month: contacts unengaged for 90 days are scheduled non-marketing, and the high
  scorers among them marked marketing again (cancelling their pending change).

The alerts come from billing's own listener on each change (after the seed commits), so they
say what the counters say; `verify_billing` replays the ledger to the stored peaks.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable

from django.db.models import Q
from django.utils import timezone

from billing.models import Subscription
from billing.services import billing_close_periods, billing_finalise_invoices
from contacts.criteria import criteria_queryset
from contacts.demo.generate import SEED_SOURCE
from contacts.models import Contact
from contacts.status.rules import pending_q
from contacts.status.selectors import usage_current
from contacts.status.services import (
    contacts_delete,
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from crm.calendar import BillingCalendar
from crm.rows import row_get_or_create
from workflows.models import ActionType, ScoringRule, Workflow, WorkflowPurpose
from workflows.scoring import scores_recompute
from workflows.services import workflow_create

MONTHS_CLOSED = 3  # closed periods before the current one
CLOSE_DELAY = dt.timedelta(hours=1)  # how long after a period's end its close runs, at most
QUALIFIED_SCORE = 15  # the definition's first group: MQL, SQL, opportunity with this score
ENGAGED_SCORE = 5  # its second group: subscribers and leads engaged in 30 days, this score
ENGAGED_DAYS = 30
UNENGAGED_DAYS = 90  # the current month's clean-up, as the hygiene wizard's default
REMARK_SCORE = 15  # unengaged contacts kept marketing all the same
TIER_HEADROOM = 1.0  # the tier: the first month's count, rounded up
BLOCKS_IN_TIER = 10  # an overage block is a tenth of the tier

# (name, event type, points, window days, half-life days)
SCORING_RULES: list[tuple[str, str, int, int | None, int | None]] = [
    ("Email opened", "email_open", 2, None, None),
    ("Email clicked", "email_click", 5, None, None),
    ("Form submitted", "form_submission", 10, None, None),
    ("Page viewed in the last 30 days", "page_view", 1, 30, None),
    ("Ad clicked", "ad_click", 4, None, None),
    ("Chatted", "chat", 6, None, None),
    ("Meeting booked (halves every 60 days)", "meeting_booked", 20, None, 60),
]


def _filter(name: str, operator: str, value) -> dict:
    key = "values" if isinstance(value, list) else "value"
    return {"propertyName": name, "operator": operator, key: value}


QUALIFIED_GROUP = {
    "filters": [
        _filter("lifecycle_stage", "IN", ["mql", "sql", "opportunity"]),
        _filter("lead_score", "GTE", QUALIFIED_SCORE),
    ]
}
ENGAGED_GROUP = {
    "filters": [
        _filter("lifecycle_stage", "IN", ["subscriber", "lead"]),
        _filter("last_engaged", "WITHIN_LAST_DAYS", ENGAGED_DAYS),
        _filter("lead_score", "GTE", ENGAGED_SCORE),
    ]
}
DEFINITION = "Marketing contact definition"
EXCLUSION = "Unsubscribed or bounced"
WORKFLOWS: list[dict] = [
    {
        "name": DEFINITION,
        "description": "Qualified leads, and subscribers and leads engaged in the last "
        f"{ENGAGED_DAYS} days, are marketing contacts.",
        "purpose": WorkflowPurpose.ENROLLMENT,
        "criteria": {"filterGroups": [QUALIFIED_GROUP, ENGAGED_GROUP]},
        "actions": [{"type": ActionType.SET_MARKETING}],
    },
    {
        "name": EXCLUSION,
        "description": "Contacts who cannot be emailed are not worth paying for.",
        "purpose": WorkflowPurpose.EXCLUSION,
        "criteria": {
            "filterGroups": [
                {"filters": [_filter("unsubscribed", "EQ", True)]},
                {"filters": [_filter("hard_bounced", "EQ", True)]},
            ]
        },
        "actions": [{"type": ActionType.SET_NON_MARKETING}],
    },
]

Step = tuple[str, Callable[[], object]]


def demo_scoring_rules() -> list[ScoringRule]:
    """The demo's scoring rules, made once (by name); an existing rule is left as it is."""
    rules = []
    for name, event_type, points, window, half_life in SCORING_RULES:
        rule, _ = row_get_or_create(
            ScoringRule,
            lookup={"name": name},
            defaults={
                "event_type": event_type,
                "points": points,
                "window_days": window,
                "half_life_days": half_life,
            },
        )
        rules.append(rule)
    return rules


def demo_scores(*, now: dt.datetime) -> int:
    """The scoring rules, then every lead score recomputed from the events (set-based)."""
    demo_scoring_rules()
    return scores_recompute(now=now).changed


def demo_workflows() -> dict[str, Workflow]:
    """The definition (enrollment) and the exclusion, enabled but neither scheduled nor
    event-triggered: they run when someone runs them. Made once, by name."""
    workflows = {}
    for fields in WORKFLOWS:
        workflow = Workflow.objects.filter(name=fields["name"]).first()
        workflows[fields["name"]] = workflow or workflow_create(enabled=True, **fields)
    return workflows


def _nice(value: float) -> int:
    """`value` rounded up to three significant digits (2,111 → 2,120), at least 10."""
    value = max(10, math.ceil(value))
    step = 10 ** max(0, len(str(value)) - 3)
    return math.ceil(value / step) * step


def demo_tier(*, live_count: int) -> Subscription:
    """Size the tier to the demo, unless someone has changed it from the defaults: the first
    month's count plus a little, so the later months cross it for real."""
    subscription = Subscription.load()
    defaults = {
        name: Subscription._meta.get_field(name).default
        for name in ("included_contacts", "block_size")
    }
    if all(getattr(subscription, name) == value for name, value in defaults.items()):
        subscription.included_contacts = _nice(live_count * TIER_HEADROOM)
        subscription.block_size = _nice(subscription.included_contacts / BLOCKS_IN_TIER)
        subscription.save(update_fields=["included_contacts", "block_size"])
    return subscription


def story_month_starts(now: dt.datetime) -> list[dt.datetime]:
    """The starts of the story's closed months and of the current one, oldest first."""
    calendar = BillingCalendar.for_account()
    starts = [calendar.period_bounds(now)[0]]
    for _ in range(MONTHS_CLOSED):
        starts.insert(0, calendar.period_bounds(starts[0] - dt.timedelta(microseconds=1))[0])
    return starts


class DemoHistory:
    """The months of the story over the demo contacts with ids above `lo` (`extras`: those
    above `mid`, made to be deleted)."""

    def __init__(
        self,
        *,
        lo: int,
        mid: int,
        marketing_sources: list[int],
        open_sources: list[int],
        close_last: bool = True,
    ):
        self.now = timezone.now()
        self.close_last = close_last  # False: the month that ended last waits for its close
        self.starts = story_month_starts(self.now)
        # The close of each month runs this long after its end; the current month's changes
        # come after the last close.
        self.close_delay = min(CLOSE_DELAY, (self.now - self.starts[-1]) / 10)
        self.demo = Contact.objects.filter(pk__gt=lo)
        self.extras = self.demo.filter(pk__gt=mid)
        self.marketing_sources = marketing_sources
        self.open_sources = open_sources
        self.exclusion = WORKFLOWS[1]["criteria"]

    def at(self, month: int, fraction: float) -> dt.datetime:
        """An instant `fraction` of the way through month `month` (0: the first closed one;
        MONTHS_CLOSED: the current one, up to now)."""
        start = self.starts[month]
        end = self.starts[month + 1] if month < MONTHS_CLOSED else self.now
        begin = start + self.close_delay if month else start
        return begin + (end - begin) * fraction

    def definition_group(self, group: dict, at: dt.datetime):
        """Contacts one group of the definition selects at `at`, minus the exclusion's (the
        exclusion wins), among the demo's contacts of sources that may be marketing."""
        selected = criteria_queryset({"filterGroups": [group]}, now=at, queryset=self.demo)
        excluded = criteria_queryset(self.exclusion, now=at).values("pk")
        return selected.filter(source_id__in=self.open_sources).exclude(pk__in=excluded)

    def close(self, month: int) -> Step:
        end = self.starts[month + 1]
        return (
            f"close of the month from {self.starts[month]:%Y-%m-%d}",
            lambda: billing_close_periods(as_of=end, at=end + self.close_delay),
        )

    def steps(self) -> list[Step]:
        suppressed = Q(unsubscribed=True) | Q(hard_bounced=True)
        first, second, last, current = range(MONTHS_CLOSED + 1)
        unengaged_at = self.at(current, 0.5)
        unengaged_cutoff = unengaged_at - dt.timedelta(days=UNENGAGED_DAYS)
        return [
            (
                "contacts from marketing sources",
                lambda: contacts_set_marketing(
                    contacts=self.demo.filter(source_id__in=self.marketing_sources),
                    source=SEED_SOURCE,
                    at=self.at(first, 0.05),
                ),
            ),
            (
                "qualified leads (the definition's first group)",
                lambda: contacts_set_marketing(
                    contacts=self.definition_group(QUALIFIED_GROUP, self.at(first, 0.4)),
                    source=SEED_SOURCE,
                    at=self.at(first, 0.4),
                ),
            ),
            ("the tier, sized to the first month", self.size_tier),
            self.close(first),
            (
                "unsubscribed and bounced scheduled non-marketing (the exclusion)",
                lambda: contacts_set_non_marketing(
                    contacts=self.demo.filter(suppressed),
                    source=SEED_SOURCE,
                    at=self.at(second, 0.3),
                ),
            ),
            (
                "a few marketing contacts deleted",
                lambda: contacts_delete(
                    contacts=self.extras, source=SEED_SOURCE, at=self.at(second, 0.6)
                ),
            ),
            self.close(second),
            (
                "engaged subscribers and leads (the definition's second group)",
                lambda: contacts_set_marketing(
                    contacts=self.definition_group(ENGAGED_GROUP, self.at(last, 0.4)),
                    source=SEED_SOURCE,
                    at=self.at(last, 0.4),
                ),
            ),
            *([self.close(last)] if self.close_last else []),
            (
                f"contacts unengaged for {UNENGAGED_DAYS} days scheduled non-marketing",
                lambda: contacts_set_non_marketing(
                    contacts=self.demo.filter(
                        Q(last_engaged_at__lt=unengaged_cutoff) | Q(last_engaged_at__isnull=True)
                    ),
                    source=SEED_SOURCE,
                    at=unengaged_at,
                ),
            ),
            (
                "high scorers kept marketing (their pending change cancelled)",
                lambda: contacts_set_marketing(
                    contacts=self.demo.filter(pending_q(self.now), lead_score__gte=REMARK_SCORE),
                    source=SEED_SOURCE,
                    at=self.at(current, 0.8),
                ),
            ),
            (
                "invoices past their grace window finalised",
                lambda: billing_finalise_invoices(at=timezone.now()),
            ),
        ]

    def size_tier(self) -> Subscription:
        return demo_tier(live_count=usage_current(at=self.at(0, 0.5)).live_count)
