"""`manage.py seed_demo`: demo data that tells one story, at any size.

What it makes:
- one source of every kind, with the default of its kind (locked kinds never marketing), and
  a hosted form, a chatflow, an app, an ad account, an email draft, an audience and a list;
- `--contacts` contacts with names, companies, lifecycle stages, lead statuses and
  addresses, spread over every source, each recording the reason the creation rule gives its
  source (`contacts.demo`);
- the engagement events behind every "last engaged" date, the scoring rules and the lead
  scores they give (recomputed from the events);
- the marketing-contact definition as an enrollment and an exclusion workflow;
- three closed months with their invoices and the current one (`crm.demo.story`), every
  change through the status service at its own instant and every close through billing's
  close service with the clock at its date; the alerts follow from the counters;
- the superuser "admin" when missing.

It lives in crm because the story needs contacts, workflows and billing at once, and
contacts may import neither of the others (docs/ARCHITECTURE.md, "Demo data").

Everything but the admin user is one transaction: a run stopped half-way leaves nothing
behind, so "how many demo contacts exist" is a sound marker. A run with the same (or a
smaller) `--contacts` changes nothing; a larger one adds the difference.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone
from tqdm import tqdm

from billing.models import Alert, Invoice
from contacts.demo.events import demo_events_insert
from contacts.demo.generate import (
    CONTACT_HISTORY_DAYS,
    DEFAULT_CONTACTS,
    DEFAULT_SEED,
    DEMO_EMAIL_SUFFIX,
    DEMO_SOURCES,
    ENGAGEMENT_DAYS,
    SEED_SOURCE,
    Pools,
    creation_decisions,
)
from contacts.demo.load import (
    PASSWORD_FILE,
    demo_contacts_insert,
    ensure_admin,
    ensure_channels,
    ensure_sources,
    load_indexes_deferred,
)
from contacts.engagement.models import EngagementEvent
from contacts.models import Contact, Source
from contacts.status.models import StatusChange
from contacts.status.selectors import usage_current
from contacts.status.services import contacts_set_marketing
from crm.demo.story import DemoHistory, demo_scores, demo_workflows, story_month_starts

DAY = dt.timedelta(days=1)


class Command(BaseCommand):
    help = (
        "Load demo data that tells one story: one source of every kind, N contacts (default "
        f"{DEFAULT_CONTACTS}) with their engagement events and lead scores, the marketing "
        "definition as workflows, and three closed months with invoices and alerts before the "
        "current one, written through the services. Demo contacts have addresses ending in "
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
        parser.add_argument(
            "--leave-last-month-open",
            action="store_true",
            help="Leave the month that ended last unclosed, to try the close (a dry run, then "
            "the close) on it.",
        )

    def handle(self, *args, contacts: int, seed: int, verbosity: int = 1, **options):
        self.close_last_month = not options.get("leave_last_month_open", False)
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
                    f"Demo data already present ({existing:,} demo contacts, {contacts:,} "
                    "asked): nothing to do."
                )
            elif existing == 0:
                self.seed_story(contacts, seed=seed, sources=sources)
            else:
                self.top_up(contacts - existing, seed=seed, sources=sources)
        # After the commit: billing's alerts and daily counts have followed each change.
        ensure_channels()
        ensure_admin(self.stdout.write)
        if existing < contacts:
            self.summary(time.monotonic() - started)

    # -- steps ------------------------------------------------------------------

    def pools(self, seed: int) -> Pools:
        if getattr(self, "_pools", (None, None))[0] != seed:
            self._pools = (seed, Pools.build(seed))
        return self._pools[1]

    def insert(self, count: int, *, seed: int, **kwargs) -> int:
        """Insert `count` contacts; return the highest id before them (theirs are above)."""
        started = time.monotonic()
        with self.bar(total=count, unit="contact", desc="contacts") as bar:
            before = demo_contacts_insert(
                count=count,
                seed=seed,
                pools=self.pools(seed),
                decisions=self.decisions,
                progress=bar.update,
                **kwargs,
            )
        self.detail(f"  {count:,} contacts inserted: {time.monotonic() - started:.1f} s")
        return before

    def engagement(self, lo: int) -> None:
        """The events behind the new contacts' "last engaged", then the lead scores."""
        started = time.monotonic()
        events = demo_events_insert(after_id=lo, now=timezone.now())
        self.detail(f"  {events:,} engagement events: {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        changed = demo_scores(now=timezone.now())
        self.detail(f"  {changed:,} lead scores recomputed: {time.monotonic() - started:.1f} s")

    def marketing_sources(self) -> list[int]:
        """The sources whose new contacts the creation rule makes marketing."""
        return [pk for pk, decision in self.decisions.items() if decision.marketing]

    def seed_story(self, count: int, *, seed: int, sources: dict[str, Source]) -> None:
        with (
            self.bar(unit="index", desc="indexes") as bar,
            load_indexes_deferred(count, bar=bar, write=self.detail),
        ):
            self.load_story(count, seed=seed, sources=sources)

    def load_story(self, count: int, *, seed: int, sources: dict[str, Source]) -> None:
        now = timezone.now()
        weights = [(sources[name].pk, share) for name, _, share in DEMO_SOURCES]
        marketing_sources = self.marketing_sources()
        # Contacts of locked sources stay non-marketing in the demo, as users expect to see.
        open_sources = [s.pk for s in sources.values() if not s.locked]
        # Every contact exists before it first engages and before the story's first month.
        created_to = min(story_month_starts(now)[0], now - (ENGAGEMENT_DAYS + 1) * DAY)
        created_from = created_to - CONTACT_HISTORY_DAYS * DAY
        lo = self.insert(
            count, seed=seed, sources=weights, created_from=created_from, created_to=created_to
        )
        # A few extra marketing contacts, deleted in the second month.
        extra = max(2, count // 250) if count else 0
        mid = self.insert(
            extra,
            seed=seed,
            sources=[(pk, 1) for pk in marketing_sources],
            created_from=created_to - 30 * DAY,
            created_to=created_to,
            suppressed=False,
        )
        self.engagement(lo)
        demo_workflows()
        history = DemoHistory(
            lo=lo,
            mid=mid,
            marketing_sources=marketing_sources,
            open_sources=open_sources,
            close_last=self.close_last_month,
        )
        self.run_steps(history.steps())

    def top_up(self, count: int, *, seed: int, sources: dict[str, Source]) -> None:
        now = timezone.now()
        weights = [(sources[name].pk, share) for name, _, share in DEMO_SOURCES]
        marketing_sources = self.marketing_sources()
        lo = self.insert(count, seed=seed, sources=weights, created_from=now, created_to=now)
        self.engagement(lo)
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
        self.stdout.write(f"Added {count:,} demo contacts, created now.")

    def run_steps(self, steps: list[tuple[str, Callable[[], object]]]) -> None:
        with self.bar(total=len(steps), unit="step", desc="story") as bar:
            for label, step in steps:
                bar.set_postfix_str(label[:60])
                started = time.monotonic()
                result = step()
                bar.update(1)
                self.detail(f"  {label}: {time.monotonic() - started:.1f} s{_counts(result)}")

    def summary(self, seconds: float) -> None:
        usage = usage_current()
        contacts = Contact.objects.filter(email__endswith=DEMO_EMAIL_SUFFIX).count()
        invoices = Invoice.objects.count()
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo data ready in {seconds:.1f} s: {contacts:,} demo contacts, "
                f"{EngagementEvent.objects.count():,} engagement events, "
                f"{StatusChange.objects.count():,} ledger rows, {invoices:,} invoices, "
                f"{Alert.objects.count():,} alerts; this period "
                f"({usage.period_start:%Y-%m-%d} – {usage.period_end:%Y-%m-%d}): "
                f"{usage.live_count:,} marketing, peak {usage.peak_count:,}, "
                f"{usage.pending_downgrades:,} pending non-marketing from "
                f"{usage.next_update:%Y-%m-%d}."
            )
        )

    def detail(self, line: str) -> None:
        if self.verbosity >= 2:
            self.stdout.write(line)

    def bar(self, **kwargs) -> tqdm:
        return tqdm(file=sys.stderr, disable=self.quiet, dynamic_ncols=True, **kwargs)


def _counts(result: object) -> str:
    """A status change's counts, for the detailed output."""
    if not hasattr(result, "matched"):
        return ""
    return (
        f", matched {result.matched:,}, changed {result.changed:,}, "
        f"scheduled {result.scheduled:,}, cancelled {result.cancelled:,}, "
        f"applied {result.applied:,}"
    )
