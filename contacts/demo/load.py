"""Writing the demo contacts: COPY on PostgreSQL, bulk_create elsewhere; sources, channels
and the admin user; and, for a large load into empty tables on PostgreSQL, the secondary
indexes dropped and built again at the end, as pg_restore does (1,000,000 contacts and
their history take about a minute and a half here instead of five).

The creation rule (`contacts_creation_policy`) is asked once per source, not per contact:
its decision says which sources create marketing contacts, and its reason is written in
every row of that source.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Max
from django.utils import timezone
from tqdm import tqdm

from contacts.demo.generate import (
    DEMO_SOURCES,
    INSERT_BATCH_SIZE,
    Batch,
    CreationDecision,
    Pools,
    Profile,
    generate_batches,
)
from contacts.models import Contact, Source
from contacts.services import contact_reason_columns
from contacts.status.results import StatusSource
from crm.rows import row_get_or_create

ADMIN_USERNAME = "admin"


def admin_url() -> str:
    """Where `make run` serves the admin (`make run PORT=8123` passes its port on)."""
    return f"http://127.0.0.1:{os.environ.get('PORT') or 8000}/admin/"


PASSWORD_FILE = ".admin_password"  # in the project directory; git-ignored
# From this many new contacts, PostgreSQL builds the indexes of the (empty) tables after the load.
DEFER_INDEXES_FROM = 50_000


def demo_contacts_insert(
    *,
    count: int,
    seed: int,
    pools: Pools,
    decisions: dict[int, CreationDecision],
    sources: list[tuple[int, int]],
    created_from: dt.datetime,
    created_to: dt.datetime,
    progress: Callable[[int], None],
    suppressed: bool = True,
) -> int:
    """Insert `count` demo contacts; return the highest id before them (theirs are above).

    `sources` is (source id, share); each row records its source's reason from `decisions`.
    """
    now = timezone.now()
    before = Contact.objects.aggregate(m=Max("pk"))["m"] or 0
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
        suppressed=suppressed,
    )
    insert = insert_copy if connection.vendor == "postgresql" else insert_bulk_create
    reasons = {pk: decision.status_source for pk, decision in decisions.items()}
    insert(pools, profiles, batches, progress, reasons)
    if connection.vendor == "postgresql":
        # Fresh statistics, so the status statements that follow get sensible plans.
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Contact._meta.db_table}")
    return before


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
            # An index's definition leaves out the statistics targets set on its
            # expressions (ALTER INDEX … SET STATISTICS): kept to be set again.
            cursor.execute(
                "SELECT i.indexrelid::regclass::text, a.attnum, a.attstattarget "
                "FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indexrelid "
                "WHERE i.indrelid = %s::regclass AND a.attstattarget > 0",
                [table],
            )
            statistics = cursor.fetchall()
            for name, _definition in constraints:
                cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            for name, _definition in indexes:
                cursor.execute(f"DROP INDEX {name}")
            dropped.append((table, indexes, constraints, statistics))
    yield
    if progress is not None:
        progress.reset(total=sum(len(i) + len(c) for _, i, c, _s in dropped))
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
        for table, indexes, constraints, statistics in dropped:
            for _name, definition in indexes:
                cursor.execute(definition)
                if progress is not None:
                    progress.update(1)
            for name, column, target in statistics:
                cursor.execute(f"ALTER INDEX {name} ALTER COLUMN {column} SET STATISTICS {target}")
            # Unique constraints first ('u' sorted after 'f', descending), then the foreign
            # keys, each checked by one query over the table.
            for name, definition in constraints:
                cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
                if progress is not None:
                    progress.update(1)
            cursor.execute(f"ANALYZE {table}")


@contextmanager
def load_indexes_deferred(count: int, *, bar: tqdm, write: Callable[[str], None]) -> Iterator[None]:
    """On PostgreSQL, load `count` contacts into an empty contacts table (and ledger) without
    their secondary indexes, when the load is large enough to make that pay."""
    if connection.vendor != "postgresql" or count < DEFER_INDEXES_FROM:
        yield
        return
    from contacts.status.models import StatusChange

    tables = [m._meta.db_table for m in (Contact, StatusChange) if not m.objects.exists()]
    with indexes_deferred(tables, progress=bar):
        yield
        started = time.monotonic()
    write(f"  indexes rebuilt: {time.monotonic() - started:.1f} s")


def ensure_channels() -> None:
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


def ensure_admin(write: Callable[[str], None]) -> None:
    """The superuser "admin" when missing (password from ADMIN_PASSWORD, or generated,
    shown once and written to PASSWORD_FILE)."""
    User = get_user_model()
    if User.objects.filter(username=ADMIN_USERNAME).exists():
        path = Path(settings.BASE_DIR) / PASSWORD_FILE
        where = (
            f"its password is the one shown when it was created (also in {path})"
            if path.exists()
            else "its password is the one set when it was created"
        )
        write(
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
        write(
            f"Created superuser '{ADMIN_USERNAME}' with the password: {password}\n"
            f"(shown once; also written to {path})"
        )
    else:
        write(f"Created superuser '{ADMIN_USERNAME}' (password from ADMIN_PASSWORD).")
    write(f"Log in at {admin_url()} as '{ADMIN_USERNAME}'.")
