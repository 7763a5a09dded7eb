"""`manage.py seed_demo`: realistic demo data for the admin, at any size.

What it makes:
- one source of every kind, with the default of its kind (locked kinds never marketing);
- `--contacts` contacts with names, companies, addresses, lifecycle stages, lead
  statuses, scores and engagement, spread over every source, each recording the reason
  the creation rule (`contacts_creation_policy`) gives its source;
- a status history over the previous and the current billing period, written
  only through the status service (`contacts.services`) with explicit, increasing
  instants, so the ledger, the counters and the contacts agree exactly as they
  would in real use;
- the superuser "admin" when missing.

Choices worth knowing:
- Demo addresses end in `.example` (RFC 2606): they can never reach a real inbox,
  and they are how a second run recognises the demo contacts. A run with the same
  (or a smaller) `--contacts` changes nothing; a larger one adds the difference.
- Contacts go in with COPY on PostgreSQL and `bulk_create(batch_size=5000)`
  elsewhere; names come from Faker's word lists, drawn once, because calling Faker
  a million times takes minutes. The creation rule is asked once per source, not per
  contact: its decision says which sources create marketing contacts, and its reason
  is written in every row of that source.
- On PostgreSQL, a large load (DEFER_INDEXES_FROM) into empty tables drops their
  secondary indexes and builds them again at the end, as pg_restore does: 1,000,000
  contacts and their history take about a minute and a half here instead of five.
- Everything but the admin user is one transaction: a run stopped half-way
  leaves nothing behind, so "how many demo contacts exist" is a sound marker.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import random
import re
import secrets
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.db.models import Max, Q
from django.utils import timezone
from tqdm import tqdm

from contacts.models import (
    Contact,
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
from contacts.status.models import StatusChange
from contacts.status.results import StatusSource
from contacts.status.rules import pending_q
from contacts.status.selectors import usage_current
from contacts.status.services import (
    contacts_delete,
    contacts_rollover,
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from crm.calendar import BillingCalendar
from crm.rows import row_get_or_create

DEFAULT_CONTACTS = 5_000
DEFAULT_SEED = 42
DEMO_EMAIL_SUFFIX = ".example"  # RFC 2606 top-level domain: never a real inbox
INSERT_BATCH_SIZE = 5_000  # rows per bulk_create statement (and per COPY write)
BACKDATE_RANGES = 50  # distinct created_at instants per batch (an UPDATE each with bulk_create)
ADMIN_USERNAME = "admin"


def admin_url() -> str:
    """Where `make run` serves the admin (`make run PORT=8123` passes its port on)."""
    return f"http://127.0.0.1:{os.environ.get('PORT') or 8000}/admin/"


PASSWORD_FILE = ".admin_password"  # in the project directory; git-ignored

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
# From this many new contacts, PostgreSQL builds the indexes of the (empty) tables after the load.
DEFER_INDEXES_FROM = 50_000
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


# Inserting: COPY on PostgreSQL, bulk_create elsewhere.

_COPY_COLUMNS = (
    "created_at, updated_at, email, first_name, last_name, "
    "company, phone, lifecycle_stage, lead_status, contact_type, unsubscribed, hard_bounced, "
    "lead_score, last_engaged_at, source_id, marketing_status, marketing_until, "
    "marketing_reason_type, marketing_reason_id, marketing_reason_name, marketing_changed_at"
)


def insert_copy(
    pools: Pools,
    profiles: list[Profile],
    batches: Iterator[Batch],
    progress: Callable[[int], None],
    reasons: dict[int, StatusSource],
) -> None:
    """PostgreSQL: one COPY for all rows (explicit created_at; auto_now_add would overwrite it).
    `reasons` gives each source's reason, written with every row of the source."""
    domains = [f"@{p.domain}\t" for p in profiles]
    tails = [p.copy_text(reasons[p.source_id]) for p in profiles]
    # "first.last" of the address, and "\tFirst\tLast\t" of the name columns, by name index.
    first_at, last_at = [f"{v}." for v in pools.first_slug], pools.last_slug
    first_col, last_col = pools.first, [f"\t{v}\t" for v in pools.last]
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {Contact._meta.db_table} ({_COPY_COLUMNS}) FROM STDIN") as copy,
    ):
        for batch in batches:
            parts = []
            for instant, rows in batch.runs():
                stamp = instant.isoformat()
                lead = f"{stamp}\t{stamp}\t"
                parts.extend(
                    f"{lead}{first_at[f]}{last_at[la]}{n}{domains[p]}{first_col[f]}{last_col[la]}{tails[p]}"
                    for n, f, la, p in zip(
                        batch.numbers[rows],
                        batch.first[rows],
                        batch.last[rows],
                        batch.profile[rows],
                        strict=True,
                    )
                )
            copy.write("".join(parts))
            progress(len(batch))


def insert_bulk_create(
    pools: Pools,
    profiles: list[Profile],
    batches: Iterator[Batch],
    progress: Callable[[int], None],
    reasons: dict[int, StatusSource],
) -> None:
    """Other databases: bulk_create a batch at a time, then backdate the batch's created_at.
    `reasons` gives each source's reason, written with every row of the source."""
    columns = {pk: contact_reason_columns(reason) for pk, reason in reasons.items()}
    for batch in batches:
        contacts = []
        for n, f, la, p in zip(batch.numbers, batch.first, batch.last, batch.profile, strict=True):
            fields = profiles[p]._asdict()
            domain = fields.pop("domain")
            contacts.append(
                Contact(
                    email=f"{pools.first_slug[f]}.{pools.last_slug[la]}{n}@{domain}",
                    first_name=pools.first[f],
                    last_name=pools.last[la],
                    **columns[fields["source_id"]],
                    **fields,
                )
            )
        created = Contact.objects.bulk_create(contacts, batch_size=INSERT_BATCH_SIZE)
        # auto_now_add stamps "now" on bulk_create, but a contact must not be younger than its
        # status history: one UPDATE per run of the batch dates it back, by the id range the
        # database returned (ids follow the rows' order).
        if created and created[0].pk is not None:
            for instant, rows in batch.runs():
                run = created[rows]
                Contact.objects.filter(pk__gte=run[0].pk, pk__lte=run[-1].pk).update(
                    created_at=instant, updated_at=instant
                )
        progress(len(batch))


class Command(BaseCommand):
    help = (
        "Load realistic demo data: one source of every kind, N contacts (default "
        f"{DEFAULT_CONTACTS}) and a status history over the previous and the current billing "
        "period, written through the status service. Demo contacts have addresses ending in "
        f"'{DEMO_EMAIL_SUFFIX}'. Idempotent: when N demo contacts (or more) exist nothing "
        "changes; when fewer exist, the difference is added, created now and given their "
        "source's default status now. Also creates the superuser 'admin' when missing "
        "(password from ADMIN_PASSWORD, or generated, printed once and written to "
        f"{PASSWORD_FILE})."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--contacts",
            type=int,
            default=DEFAULT_CONTACTS,
            help=f"How many demo contacts should exist (default {DEFAULT_CONTACTS}).",
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=DEFAULT_SEED,
            help=f"Random seed: the same seed gives the same names and companies (default {DEFAULT_SEED}).",
        )

    def handle(self, *args, contacts: int, seed: int, verbosity: int = 1, **options):
        if contacts < 0:
            raise CommandError("--contacts must be zero or more.")
        self.quiet = verbosity == 0
        self.verbosity = verbosity
        started = time.monotonic()
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    # Plan for solid-state storage, as nearly every host has now: with the
                    # default (4, for spinning disks) the planner answers the status service's
                    # per-chunk id look-ups with a scan of the whole table (docs/BENCHMARKS.md).
                    cursor.execute("SET LOCAL random_page_cost = 1.1")
            sources = ensure_sources()
            self.decisions = creation_decisions(sources.values())
            existing = Contact.objects.filter(email__endswith=DEMO_EMAIL_SUFFIX).count()
            if existing >= contacts:
                self.stdout.write(
                    f"Demo data already present ({existing} demo contacts, {contacts} asked): "
                    "nothing to do."
                )
            elif existing == 0:
                self.seed_history(contacts, seed=seed, sources=sources)
            else:
                self.top_up(contacts - existing, seed=seed, sources=sources)
        self.ensure_channels()
        self.ensure_admin()
        if existing < contacts:
            self.summary(time.monotonic() - started)

    # -- steps ------------------------------------------------------------------

    def pools(self, seed: int) -> Pools:
        if getattr(self, "_pools", (None, None))[0] != seed:
            self._pools = (seed, Pools.build(seed))
        return self._pools[1]

    def insert(self, count: int, *, seed: int, sources, created_from, created_to, **kw) -> int:
        """Insert `count` contacts; return the highest id before them (theirs are above)."""
        now = timezone.now()
        before = Contact.objects.aggregate(m=Max("pk"))["m"] or 0
        pools = self.pools(seed)
        rng = random.Random(f"{seed}:{before}")
        profiles, batches = generate_batches(
            pools=pools,
            rng=rng,
            count=count,
            # Above every id in use, and a demo address's number never exceeds its contact's
            # id: a later top-up can never produce an address that exists already.
            first_number=before + 1,
            sources=sources,
            created_from=created_from,
            created_to=created_to,
            now=now,
            **kw,
        )
        insert = insert_copy if connection.vendor == "postgresql" else insert_bulk_create
        reasons = {pk: decision.status_source for pk, decision in self.decisions.items()}
        started = time.monotonic()
        with self.bar(total=count, unit="contact", desc="contacts") as bar:
            insert(pools, profiles, batches, bar.update, reasons)
        if self.verbosity >= 2:
            self.stdout.write(f"  {count} contacts inserted: {time.monotonic() - started:.1f} s")
        if connection.vendor == "postgresql":
            # Fresh statistics, so the status statements below get sensible plans.
            with connection.cursor() as cursor:
                cursor.execute(f"ANALYZE {Contact._meta.db_table}")
        return before

    def marketing_sources(self) -> list[int]:
        """The sources whose new contacts the creation rule makes marketing."""
        return [pk for pk, decision in self.decisions.items() if decision.marketing]

    def seed_history(self, count: int, *, seed: int, sources: dict[str, Source]) -> None:
        with self.indexes_deferred(count):
            self.load_with_history(count, seed=seed, sources=sources)

    def load_with_history(self, count: int, *, seed: int, sources: dict[str, Source]) -> None:
        now = timezone.now()
        calendar = BillingCalendar.for_account()
        cur_start, _ = calendar.period_bounds(now)
        prev_start, _ = calendar.period_bounds(cur_start - dt.timedelta(microseconds=1))
        weights = [(sources[name].pk, share) for name, _, share in DEMO_SOURCES]
        marketing_sources = self.marketing_sources()
        # Contacts of locked sources stay non-marketing in the demo, as users expect to see.
        open_sources = [s.pk for s in sources.values() if not s.locked]
        # A few extra marketing contacts, deleted during the previous period.
        extra = max(2, count // 250) if count else 0
        created_from = prev_start - dt.timedelta(days=CONTACT_HISTORY_DAYS)
        lo = self.insert(
            count,
            seed=seed,
            sources=weights,
            created_from=created_from,
            created_to=prev_start,
        )
        mid = self.insert(
            extra,
            seed=seed,
            sources=[(pk, 1) for pk in marketing_sources],
            created_from=prev_start - dt.timedelta(days=30),
            created_to=prev_start,
            suppressed=False,
        )
        demo = Contact.objects.filter(pk__gt=lo)
        extras = demo.filter(pk__gt=mid)

        def in_prev(fraction: float) -> dt.datetime:
            return prev_start + (cur_start - prev_start) * fraction

        def in_cur(fraction: float) -> dt.datetime:
            return cur_start + (now - cur_start) * fraction

        engaged_recently = now - dt.timedelta(days=14)
        unengaged = now - dt.timedelta(days=90)
        suppressed = Q(unsubscribed=True) | Q(hard_bounced=True)
        # In time order: the service never lets the change clock run backwards.
        steps: list[tuple[str, Callable[[], object]]] = [
            (
                "previous period: contacts from marketing sources",
                lambda: contacts_set_marketing(
                    contacts=demo.filter(source_id__in=marketing_sources),
                    source=SEED_SOURCE,
                    at=in_prev(0.05),
                ),
            ),
            (
                "previous period: qualified leads",
                lambda: contacts_set_marketing(
                    contacts=demo.filter(
                        source_id__in=open_sources,
                        lifecycle_stage__in=[LifecycleStage.MQL, LifecycleStage.SQL],
                        lead_score__gte=60,
                    ).exclude(suppressed),
                    source=SEED_SOURCE,
                    at=in_prev(0.3),
                ),
            ),
            (
                "previous period: unsubscribed and bounced scheduled non-marketing",
                lambda: contacts_set_non_marketing(
                    contacts=demo.filter(suppressed), source=SEED_SOURCE, at=in_prev(0.6)
                ),
            ),
            (
                "previous period: a few marketing contacts deleted",
                lambda: contacts_delete(contacts=extras, source=SEED_SOURCE, at=in_prev(0.8)),
            ),
            (
                "current period: recently engaged subscribers and leads",
                lambda: contacts_set_marketing(
                    contacts=demo.filter(
                        source_id__in=open_sources,
                        last_engaged_at__gte=engaged_recently,
                        lifecycle_stage__in=[LifecycleStage.SUBSCRIBER, LifecycleStage.LEAD],
                        lead_score__gte=25,
                    ).exclude(suppressed),
                    source=SEED_SOURCE,
                    at=in_cur(0.2),
                ),
            ),
            (
                "current period: unengaged contacts scheduled non-marketing",
                lambda: contacts_set_non_marketing(
                    contacts=demo.filter(
                        Q(last_engaged_at__lt=unengaged) | Q(last_engaged_at__isnull=True)
                    ),
                    source=SEED_SOURCE,
                    at=in_cur(0.5),
                ),
            ),
            (
                "current period: high scorers re-marked (pending change cancelled)",
                lambda: contacts_set_marketing(
                    contacts=demo.filter(pending_q(now), lead_score__gte=70),
                    source=SEED_SOURCE,
                    at=in_cur(0.8),
                ),
            ),
            (
                # Last: it runs at the real "now", after every dated change above.
                "rollover: the previous period's downgrades applied",
                lambda: contacts_rollover(as_of=cur_start),
            ),
        ]
        self.run_steps(steps)

    @contextmanager
    def indexes_deferred(self, count: int) -> Iterator[None]:
        """On PostgreSQL, load an empty contacts table without its secondary indexes."""
        if connection.vendor != "postgresql" or count < DEFER_INDEXES_FROM:
            yield
            return
        tables = [m._meta.db_table for m in (Contact, StatusChange) if not m.objects.exists()]
        with (
            self.bar(unit="index", desc="indexes") as bar,
            indexes_deferred(tables, progress=bar),
        ):
            yield
            started = time.monotonic()
        if self.verbosity >= 2:
            self.stdout.write(f"  indexes rebuilt: {time.monotonic() - started:.1f} s")

    def top_up(self, count: int, *, seed: int, sources: dict[str, Source]) -> None:
        now = timezone.now()
        weights = [(sources[name].pk, share) for name, _, share in DEMO_SOURCES]
        marketing_sources = self.marketing_sources()
        lo = self.insert(count, seed=seed, sources=weights, created_from=now, created_to=now)
        new = Contact.objects.filter(pk__gt=lo, email__endswith=DEMO_EMAIL_SUFFIX)
        self.run_steps(
            [
                (
                    "new contacts from marketing sources",
                    lambda: contacts_set_marketing(
                        contacts=new.filter(source_id__in=marketing_sources), source=SEED_SOURCE
                    ),
                )
            ]
        )
        self.stdout.write(f"Added {count} demo contacts, created now.")

    def run_steps(self, steps: list[tuple[str, Callable[[], object]]]) -> None:
        with self.bar(total=len(steps), unit="step", desc="status history") as bar:
            for label, step in steps:
                bar.set_postfix_str(label[:60])
                started = time.monotonic()
                result = step()
                bar.update(1)
                if self.verbosity >= 2:
                    self.stdout.write(
                        f"  {label}: {time.monotonic() - started:.1f} s, "
                        f"matched {result.matched}, changed {result.changed}, "
                        f"scheduled {result.scheduled}, cancelled {result.cancelled}, "
                        f"applied {result.applied}"
                    )

    def ensure_channels(self) -> None:
        """A hosted form, a chatflow, a two-way-sync app, an ad account, a marketing email
        draft, an ad audience and a list, so every screen has something to show. Made
        once (by name); an app's or ad account's token is not shown: regenerate it in the
        admin to use the intake endpoints."""
        from contacts.intake.models import (
            AdAccount,
            AdPlatform,
            Chatflow,
            ConnectedApp,
            Form,
        )
        from contacts.intake.services import (
            ad_account_create,
            chatflow_save,
            connected_app_create,
            form_save,
        )
        from contacts.outreach.models import (
            AdAudience,
            ContactList,
            MarketingEmail,
        )
        from contacts.outreach.services import marketing_email_create

        if not Form.objects.filter(slug="newsletter").exists():
            form_save(
                form=Form(
                    name="Newsletter signup",
                    slug="newsletter",
                    fields=[
                        {"name": "first_name", "required": True},
                        {"name": "company", "label": "Organisation"},
                    ],
                    consent_label="Send me the monthly newsletter.",
                    consent_required=True,
                )
            )
        if not Chatflow.objects.filter(name="Website chat").exists():
            chatflow_save(chatflow=Chatflow(name="Website chat"))
        if not ConnectedApp.objects.filter(name="Shop").exists():
            connected_app_create(name="Shop", two_way_sync=True)
        if not AdAccount.objects.filter(name="LinkedIn lead gen").exists():
            ad_account_create(name="LinkedIn lead gen", platform=AdPlatform.LINKEDIN)
        if not MarketingEmail.objects.filter(name="November newsletter").exists():
            marketing_email_create(
                name="November newsletter",
                subject="What's new in November",
                body="Hello,\n\nHere is what is new this month.\n\nUnsubscribe: {unsubscribe_url}",
                audience_filter={"lifecycle_stage": "lead"},
            )
        row_get_or_create(
            AdAudience,
            lookup={"name": "Retargeting: leads"},
            defaults={"platform": AdPlatform.LINKEDIN},
        )
        row_get_or_create(ContactList, lookup={"name": "Webinar attendees"})

    def ensure_admin(self) -> None:
        User = get_user_model()
        if User.objects.filter(username=ADMIN_USERNAME).exists():
            path = Path(settings.BASE_DIR) / PASSWORD_FILE
            where = (
                f"its password is the one shown when it was created (also in {path})"
                if path.exists()
                else "its password is the one set when it was created"
            )
            self.stdout.write(
                f"Superuser '{ADMIN_USERNAME}' exists; {where}. Log in at {admin_url()}\n"
                f"To set a new password: .venv/bin/python manage.py changepassword "
                f"{ADMIN_USERNAME} (or delete the user and run make run again)."
            )
            return
        password = os.environ.get("ADMIN_PASSWORD", "")
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        User.objects.create_superuser(
            username=ADMIN_USERNAME, email="admin@marketable.example", password=password
        )
        if generated:
            path = Path(settings.BASE_DIR) / PASSWORD_FILE
            path.write_text(password + "\n")
            path.chmod(0o600)
            self.stdout.write(
                f"Created superuser '{ADMIN_USERNAME}' with the password: {password}\n"
                f"(shown once; also written to {path})"
            )
        else:
            self.stdout.write(
                f"Created superuser '{ADMIN_USERNAME}' (password from ADMIN_PASSWORD)."
            )
        self.stdout.write(f"Log in at {admin_url()} as '{ADMIN_USERNAME}'.")

    def summary(self, seconds: float) -> None:
        usage = usage_current()
        contacts = Contact.objects.filter(email__endswith=DEMO_EMAIL_SUFFIX).count()
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo data ready in {seconds:.1f} s: {contacts} demo contacts, "
                f"{StatusChange.objects.count()} ledger rows; this period "
                f"({usage.period_start:%Y-%m-%d} – {usage.period_end:%Y-%m-%d}): "
                f"{usage.live_count} marketing, peak {usage.peak_count}, "
                f"{usage.pending_downgrades} pending non-marketing from {usage.next_update:%Y-%m-%d}."
            )
        )

    def bar(self, **kwargs) -> tqdm:
        return tqdm(file=sys.stderr, disable=self.quiet, dynamic_ncols=True, **kwargs)


def ensure_sources() -> dict[str, Source]:
    """One source of every kind; an existing source of the same name is kept as it is."""
    sources = {}
    for name, kind, _share in DEMO_SOURCES:
        sources[name], _ = row_get_or_create(
            Source,
            lookup={"name": name},
            defaults={"kind": kind, "default_marketing": Source.kind_default(kind)},
        )
    return sources


@contextmanager
def indexes_deferred(tables: list[str], progress: tqdm | None = None) -> Iterator[None]:
    """PostgreSQL: drop the tables' secondary indexes, unique and foreign-key constraints,
    and build them again when the block ends. For bulk loads into empty tables.

    Keeping a dozen indexes up to date row by row made 1,000,000 contacts and their
    history take minutes; building them once at the end takes seconds (pg_restore does
    the same). The definitions are read from the catalogue, so they come back exactly as
    the migrations made them. Use it inside a transaction: DDL is transactional, so a
    failure rolls back to the original indexes. The tables are locked meanwhile.
    """
    dropped: list[tuple[str, list[tuple[str, str]], list[tuple[str, str]]]] = []
    with connection.cursor() as cursor:
        for table in tables:
            # The unique and foreign-key constraints (a foreign key's deferred check of each
            # row would also block the ALTER TABLE that adds the unique one back) …
            cursor.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype IN ('u', 'f') "
                "ORDER BY contype DESC, conname",
                [table],
            )
            constraints = cursor.fetchall()
            # … and the indexes that back no constraint (the primary key stays).
            cursor.execute(
                "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) "
                "FROM pg_index i WHERE i.indrelid = %s::regclass AND NOT i.indisprimary "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) "
                "ORDER BY 1",
                [table],
            )
            indexes = cursor.fetchall()
            for name, _definition in constraints:
                cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            for name, _definition in indexes:
                cursor.execute(f"DROP INDEX {name}")
            dropped.append((table, indexes, constraints))
    yield
    if progress is not None:
        progress.reset(total=sum(len(i) + len(c) for _, i, c in dropped))
    with connection.cursor() as cursor:
        # PostgreSQL refuses CREATE INDEX and ALTER TABLE on a table with pending trigger
        # events. The foreign keys of *other* tables that point at these (engagement
        # events, list memberships, enrollments … → contacts) are DEFERRABLE INITIALLY
        # DEFERRED, as Django makes them, and were not dropped: every contact deleted in
        # the block (the demo history deletes a few) left a deferred check on the contacts
        # table. Run those checks now — they would run at commit anyway — so the table has
        # none pending, then put the constraints back to deferred (what
        # `connection.check_constraints()` does on PostgreSQL).
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        for table, indexes, constraints in dropped:
            for _name, definition in indexes:
                cursor.execute(definition)
                if progress is not None:
                    progress.update(1)
            # Unique constraints first ('u' sorted after 'f', descending), then the foreign
            # keys, each checked by one query over the table.
            for name, definition in constraints:
                cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
                if progress is not None:
                    progress.update(1)
            cursor.execute(f"ANALYZE {table}")
