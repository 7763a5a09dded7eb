"""The benchmark's database: created and migrated if missing, filled and reset with plain SQL.

Everything here runs against the DATABASE_URL database the benchmark was given
(`make bench`: marketable_bench) and may wipe its contacts tables.
"""

from __future__ import annotations

import psycopg
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction

from contacts.demo.load import indexes_deferred
from contacts.models import (
    Contact,
    LifecycleStage,
    Source,
    SourceKind,
)
from contacts.status.models import (
    PeriodUsage,
    StatusChange,
    StatusChangeRequest,
    UsageState,
)
from crm.models import Account

CONTACT = Contact._meta.db_table
# Every column of a contact row, in the order the synthetic fills write them.
CONTACT_COLUMNS = (
    "created_at, updated_at, email, first_name, last_name, company, phone, lifecycle_stage, "
    "lead_status, contact_type, unsubscribed, hard_bounced, lead_score, last_engaged_at, "
    "source_id, marketing_status, marketing_until, marketing_reason_type, "
    "marketing_reason_id, marketing_reason_name, marketing_changed_at"
)
LEDGER = StatusChange._meta.db_table
REQUEST = StatusChangeRequest._meta.db_table
USAGE = PeriodUsage._meta.db_table
STATE = UsageState._meta.db_table

# Contact g gets STAGES[g % 10]: each stage's share is fixed, so "lifecycle_stage = 'mql'"
# selects exactly a tenth of the table, spread evenly over it (the bulk change), and
# "sql" another tenth (the per-contact loops).
STAGES = [
    LifecycleStage.SUBSCRIBER,
    LifecycleStage.LEAD,
    LifecycleStage.MQL,
    LifecycleStage.SQL,
    LifecycleStage.OPPORTUNITY,
    LifecycleStage.CUSTOMER,
    LifecycleStage.LEAD,
    LifecycleStage.LEAD,
    LifecycleStage.EVANGELIST,
    LifecycleStage.OTHER,
]
BULK_STAGE = LifecycleStage.MQL.value  # 10% of the contacts
LOOP_STAGE = LifecycleStage.SQL.value  # 10%, untouched by the bulk change


def ensure_database() -> None:
    """Create the benchmark database if it does not exist, then migrate it."""
    db = settings.DATABASES["default"]
    params = {
        "dbname": "postgres",
        "user": db.get("USER") or None,
        "password": db.get("PASSWORD") or None,
        "host": db.get("HOST") or None,
        "port": db.get("PORT") or None,
    }
    with psycopg.connect(
        **{k: v for k, v in params.items() if v is not None}, autocommit=True
    ) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]])
        if exists.fetchone() is None:
            admin.execute(f'CREATE DATABASE "{db["NAME"]}"')
    call_command("migrate", interactive=False, verbosity=0)


def execute(*statements: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql, params)


def checkpoint() -> None:
    """Flush dirty pages so every timed run starts with the same amount of writing to do."""
    execute("CHECKPOINT")


def vacuum() -> None:
    execute(*(f"VACUUM ANALYZE {table}" for table in (CONTACT, LEDGER, REQUEST, USAGE, STATE)))


def bench_source() -> Source:
    """The account as every section wants it (monthly from the 1st, UTC) and the source of
    the synthetic contacts."""
    account = Account.load()
    account.update_day, account.yearly_plan, account.time_zone = 1, False, "UTC"
    account.save()
    source, _ = Source.objects.get_or_create(
        name="Benchmark import", defaults={"kind": SourceKind.IMPORT, "default_marketing": False}
    )
    return source


def fill(count: int, *, scores: bool = True) -> None:
    """Replace every contact with `count` non-marketing contacts (INSERT … SELECT), then
    VACUUM ANALYZE. The indexes are built after the insert, as a restore does. Lead scores
    0–100, or all 0 (`scores=False`: no event scored yet)."""
    execute(f"TRUNCATE {CONTACT}, {LEDGER}, {REQUEST}, {USAGE}, {STATE} RESTART IDENTITY CASCADE")
    source = bench_source()
    stages = "ARRAY[" + ", ".join(f"'{stage.value}'" for stage in STAGES) + "]"
    with transaction.atomic(), indexes_deferred([CONTACT, LEDGER]):
        execute(
            f"""
            INSERT INTO {CONTACT} ({CONTACT_COLUMNS})
            SELECT now() - g * interval '1 minute', now(), 'person' || g || '@bench.example',
                   'First' || g %% 997, 'Last' || g %% 1009, 'Company ' || g %% 5003, '',
                   ({stages})[g %% 10 + 1], '', 'prospect', g %% 50 = 0, g %% 97 = 0,
                   {"g %% 101" if scores else "0"}, now() - (g %% 120) * interval '1 day', %s,
                   'non_marketing', NULL,
                   '', '', '', NULL
            FROM generate_series(1, %s) AS g
            """,
            params=[source.pk, count],
        )
    vacuum()


def reset() -> None:
    """Every contact non-marketing again, the ledger and the counters empty; VACUUM ANALYZE
    and CHECKPOINT, so each contender starts from the same state."""
    execute(
        f"""
        UPDATE {CONTACT} SET marketing_status = 'non_marketing', marketing_until = NULL,
               marketing_reason_type = '', marketing_reason_id = '', marketing_reason_name = '',
               marketing_changed_at = NULL
        WHERE marketing_status <> 'non_marketing' OR marketing_until IS NOT NULL
        """,
        f"TRUNCATE {LEDGER}, {REQUEST}, {USAGE}, {STATE} CASCADE",
    )
    vacuum()
    checkpoint()


def ids_of_stage(stage: str, limit: int) -> list[int]:
    return list(
        Contact.objects.filter(lifecycle_stage=stage)
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )
