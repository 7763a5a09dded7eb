"""Demo contacts, drawn: names, companies, profiles and batches (no database writes).

Rows pick from word lists drawn once a run (Faker's en_US lists): calling Faker for each of
a million rows takes minutes. A row draws a profile and two names: three random numbers a
row instead of a dozen, which keeps a million rows to seconds of Python. Demo addresses end
in `.example` (RFC 2606): they can never reach a real inbox, and they are how a second run
recognises the demo contacts.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from contacts.models import (
    ContactType,
    LeadStatus,
    LifecycleStage,
    MarketingStatus,
    Source,
    SourceKind,
    StatusSourceType,
)
from contacts.services import (
    CreationDecision,
    contact_reason_columns,
    contacts_creation_policy,
)
from contacts.status.results import StatusSource

DEFAULT_CONTACTS = 5_000
DEFAULT_SEED = 42
DEMO_EMAIL_SUFFIX = ".example"  # RFC 2606 top-level domain: never a real inbox
INSERT_BATCH_SIZE = 5_000  # rows per bulk_create statement (and per COPY write)
BACKDATE_RANGES = 50  # distinct created_at instants per batch (an UPDATE each with bulk_create)

# (name, kind, share of new contacts in %)
DEMO_SOURCES: list[tuple[str, str, int]] = [
    ("Website form", SourceKind.FORM, 22),
    ("Partner webinar form (external)", SourceKind.EXTERNAL_FORM, 6),
    ("CSV import", SourceKind.IMPORT, 20),
    ("Website chat", SourceKind.CHATFLOW, 8),
    ("Salesforce sync", SourceKind.INTEGRATION, 12),
    ("LinkedIn lead ads", SourceKind.ADS, 8),
    ("Created by hand", SourceKind.MANUAL, 8),
    ("Mobile app", SourceKind.MOBILE_APP, 3),
    ("Gmail logging", SourceKind.EMAIL_LOGGING, 4),
    ("Team inbox", SourceKind.TEAM_INBOX, 3),
    ("Document tracking", SourceKind.DOCUMENT, 2),
    ("Meetings link", SourceKind.MEETINGS, 2),
    ("Outlook extension", SourceKind.EMAIL_EXTENSION, 2),
]

LIFECYCLE_WEIGHTS = {
    LifecycleStage.SUBSCRIBER: 15,
    LifecycleStage.LEAD: 35,
    LifecycleStage.MQL: 12,
    LifecycleStage.SQL: 8,
    LifecycleStage.OPPORTUNITY: 6,
    LifecycleStage.CUSTOMER: 16,
    LifecycleStage.EVANGELIST: 3,
    LifecycleStage.OTHER: 5,
}
CUSTOMER_STAGES = {LifecycleStage.CUSTOMER.value, LifecycleStage.EVANGELIST.value}
# Lead score grows with the stage; each contact adds 0-40 to its stage's base.
STAGE_SCORE_BASE = {
    LifecycleStage.SUBSCRIBER: 0,
    LifecycleStage.LEAD: 10,
    LifecycleStage.MQL: 40,
    LifecycleStage.SQL: 55,
    LifecycleStage.OPPORTUNITY: 60,
    LifecycleStage.CUSTOMER: 45,
    LifecycleStage.EVANGELIST: 50,
    LifecycleStage.OTHER: 0,
}
LEAD_STATUS_WEIGHTS = {
    "": 20,
    LeadStatus.NEW: 20,
    LeadStatus.OPEN: 15,
    LeadStatus.IN_PROGRESS: 10,
    LeadStatus.OPEN_DEAL: 5,
    LeadStatus.UNQUALIFIED: 10,
    LeadStatus.ATTEMPTED_TO_CONTACT: 10,
    LeadStatus.CONNECTED: 7,
    LeadStatus.BAD_TIMING: 3,
}
# Contact type of the contacts that are not customers (customers are ContactType.CUSTOMER).
CONTACT_TYPE_WEIGHTS = {
    ContactType.PROSPECT: 84,
    ContactType.PARTNER: 8,
    ContactType.EMPLOYEE: 2,
    ContactType.EVANGELIST: 2,
    ContactType.OTHER: 4,
}
UNSUBSCRIBED_PERCENT = 4
HARD_BOUNCED_PERCENT = 2
NEVER_ENGAGED_PERCENT = 15
ENGAGEMENT_DAYS = 120
WITH_PHONE_PERCENT = 60
COMPANIES = 3_000
PROFILE_POOL = 100_000  # distinct profiles (company, stage, score, source…) a run draws
CONTACT_HISTORY_DAYS = 540  # contacts were created over the 18 months before the demo history

SEED_SOURCE = StatusSource(StatusSourceType.SEED, name="Demo data")

_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Pools:
    """Names, companies and phones, drawn once a run from Faker's en_US word lists.

    Rows pick from these lists; calling Faker for each of a million rows takes minutes.
    """

    first: list[str]
    first_weights: list[float]  # cumulative, by how common the name is
    last: list[str]
    last_weights: list[float]
    # lower-cased ASCII for the address, parallel to first/last
    first_slug: list[str]
    last_slug: list[str]
    companies: list[tuple[str, str]]  # (name, domain)
    phones: list[str]  # "" for contacts without a phone, in proportion

    @classmethod
    def build(cls, seed: int) -> Pools:
        from faker.providers.company.en_US import Provider as CompanyProvider
        from faker.providers.person.en_US import Provider as PersonProvider

        rng = random.Random(seed)
        first = {_clean(k): v for k, v in PersonProvider.first_names.items()}
        last = {_clean(k): v for k, v in PersonProvider.last_names.items()}
        surnames = list(last)
        suffixes = list(CompanyProvider.company_suffixes)
        names = set()
        while len(names) < COMPANIES:
            a, b, c = rng.sample(surnames, 3)
            names.add(rng.choice([f"{a} {rng.choice(suffixes)}", f"{a}-{b}", f"{a}, {b} and {c}"]))
        companies = [
            (name, _SLUG.sub("-", name.lower()).strip("-") + DEMO_EMAIL_SUFFIX)
            for name in sorted(names)
        ]
        # 555-01xx numbers are reserved for fiction in North America.
        phones = [
            f"+1 {rng.randint(201, 989)}-555-01{rng.randint(0, 99):02d}" for _ in range(6_000)
        ]
        blanks = len(phones) * (100 - WITH_PHONE_PERCENT) // WITH_PHONE_PERCENT
        return cls(
            first=list(first),
            first_weights=list(itertools.accumulate(first.values())),
            last=list(last),
            last_weights=list(itertools.accumulate(last.values())),
            first_slug=[_SLUG.sub("", v.lower()) or "x" for v in first],
            last_slug=[_SLUG.sub("", v.lower()) or "x" for v in last],
            companies=companies,
            phones=phones + [""] * blanks,
        )


def _clean(value: str) -> str:
    # COPY's text format gives tab, newline and backslash a meaning; names never need them.
    return re.sub(r"[\t\n\r\\]", " ", value).strip()


def _copy_escape(value: str) -> str:
    """A value as one column of COPY's text format, unchanged (a source's name may hold
    anything)."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


class Profile(NamedTuple):
    """Everything about a contact but its name, address and creation date.

    A row draws a profile and two names: three random numbers a row instead of a
    dozen, which keeps a million rows to seconds of Python.
    """

    company: str
    domain: str
    phone: str
    lifecycle_stage: str
    lead_status: str
    contact_type: str
    unsubscribed: bool
    hard_bounced: bool
    lead_score: int
    last_engaged_at: dt.datetime | None
    source_id: int

    def copy_text(self, reason: StatusSource) -> str:
        """Its columns from `company` on, as COPY text, with the status of a new contact
        and `reason`, its source's reason from the creation rule."""
        engaged = self.last_engaged_at.isoformat() if self.last_engaged_at else "\\N"
        return (
            f"{self.company}\t{self.phone}\t{self.lifecycle_stage}\t{self.lead_status}\t"
            f"{self.contact_type}\t{'t' if self.unsubscribed else 'f'}\t"
            f"{'t' if self.hard_bounced else 'f'}\t{self.lead_score}\t{engaged}\t"
            f"{self.source_id}\t{MarketingStatus.NON_MARKETING.value}\t\\N\t"
            + "\t".join(_copy_escape(value) for value in contact_reason_columns(reason).values())
            + "\t\\N\n"
        )


def creation_decisions(sources: Iterable[Source]) -> dict[int, CreationDecision]:
    """The creation rule's decision for a new contact of each source, by source id.

    Asked once per source: the seeder writes contacts in sets (COPY, bulk_create), so
    the decision is read here and applied to every row of the source — its reason in
    the rows themselves, its status through the history's status changes.
    """
    return {source.pk: contacts_creation_policy(source=source) for source in sources}


def draw_profiles(
    *,
    pools: Pools,
    rng: random.Random,
    count: int,
    sources: list[tuple[int, int]],
    now: dt.datetime,
    suppressed: bool,
) -> list[Profile]:
    def pick(weights: dict) -> list[str]:
        return [str(v) for v in rng.choices(list(weights), weights=list(weights.values()), k=count)]

    stages = pick(LIFECYCLE_WEIGHTS)
    statuses = pick(LEAD_STATUS_WEIGHTS)
    kinds = pick(CONTACT_TYPE_WEIGHTS)
    source_ids = rng.choices([pk for pk, _ in sources], weights=[w for _, w in sources], k=count)
    score_base = {str(k): v for k, v in STAGE_SCORE_BASE.items()}
    floor = (now - dt.timedelta(days=ENGAGEMENT_DAYS)).replace(microsecond=0)
    profiles = []
    for stage, status, kind, source_id in zip(stages, statuses, kinds, source_ids, strict=True):
        company, domain = rng.choice(pools.companies)
        roll = rng.randrange(100) if suppressed else 100
        never = rng.randrange(100) < NEVER_ENGAGED_PERCENT
        profiles.append(
            Profile(
                company=company,
                domain=domain,
                phone=rng.choice(pools.phones),
                lifecycle_stage=stage,
                lead_status=status,
                contact_type=ContactType.CUSTOMER.value if stage in CUSTOMER_STAGES else kind,
                unsubscribed=roll < UNSUBSCRIBED_PERCENT,
                hard_bounced=UNSUBSCRIBED_PERCENT
                <= roll
                < UNSUBSCRIBED_PERCENT + HARD_BOUNCED_PERCENT,
                lead_score=min(100, score_base[stage] + rng.randrange(41)),
                last_engaged_at=None
                if never
                else floor + dt.timedelta(seconds=rng.randrange(ENGAGEMENT_DAYS * 86_400)),
                source_id=source_id,
            )
        )
    return profiles


@dataclass
class Batch:
    """Up to INSERT_BATCH_SIZE new contacts in BACKDATE_RANGES runs of one creation instant."""

    numbers: range  # the number in each address
    first: list[int]  # index into Pools.first
    last: list[int]  # index into Pools.last
    profile: list[int]  # index into the profiles
    created_at: list[dt.datetime]  # one instant per run of rows

    def __len__(self) -> int:
        return len(self.numbers)

    def runs(self) -> Iterator[tuple[dt.datetime, slice]]:
        size, count = len(self), len(self.created_at)
        for k, instant in enumerate(self.created_at):
            yield instant, slice(k * size // count, (k + 1) * size // count)


def generate_batches(
    *,
    pools: Pools,
    rng: random.Random,
    count: int,
    first_number: int,
    sources: list[tuple[int, int]],
    created_from: dt.datetime,
    created_to: dt.datetime,
    now: dt.datetime,
    suppressed: bool = True,
) -> tuple[list[Profile], Iterator[Batch]]:
    """The profiles and the batches of new contacts (INSERT_BATCH_SIZE rows each).

    `first_number` numbers the addresses (first.last<number>@company.example) so they
    are unique; `created_at` grows with the number, as it does in a real table.
    """
    profiles = draw_profiles(
        pools=pools,
        rng=rng,
        count=max(1, min(count, PROFILE_POOL)),
        sources=sources,
        now=now,
        suppressed=suppressed,
    )
    n_batches = max(1, -(-count // INSERT_BATCH_SIZE))
    step = (created_to - created_from) / (n_batches * BACKDATE_RANGES)

    def batches() -> Iterator[Batch]:
        kinds = range(len(profiles))
        for index, offset in enumerate(range(0, count, INSERT_BATCH_SIZE)):
            size = min(INSERT_BATCH_SIZE, count - offset)
            base = created_from + step * index * BACKDATE_RANGES
            yield Batch(
                numbers=range(first_number + offset, first_number + offset + size),
                first=rng.choices(range(len(pools.first)), cum_weights=pools.first_weights, k=size),
                last=rng.choices(range(len(pools.last)), cum_weights=pools.last_weights, k=size),
                profile=rng.choices(kinds, k=size),
                created_at=[
                    (base + step * k).replace(microsecond=0)
                    for k in range(min(size, BACKDATE_RANGES))
                ],
            )

    return profiles, batches()
