"""Realistic contacts for the reads (k), written by one INSERT … SELECT on PostgreSQL.

`seed_demo --contacts N` writes the demo's contacts, their events, scores and a status
history through the service: about 12 minutes at 1,000,000 and out of reach at
10,000,000. The reads need the rows, not the history, so `fill(count)` writes contacts
shaped like the demo's in one statement over generate_series:

- names drawn from the demo's word lists (`contacts.demo.generate.Pools`: Faker's en_US
  first and last names, by how common they are) and its 3,000 companies and phones;
  addresses `first.last.N@company.example`;
- the demo's sources (`DEMO_SOURCES`) in their shares, lifecycle stages, lead statuses,
  contact types, lead scores (growing with the stage), suppression and last-engaged
  dates (15 % never, the others over the past `ENGAGEMENT_DAYS`), all by the demo's
  weights; creation dates over the past `CONTACT_HISTORY_DAYS`, growing with the id;
- each contact's reason fields as the creation rule (`contacts_creation_policy`) gives
  them for its source;
- about 40 % marketing (never from a locked source, never suppressed), a quarter of
  them pending a downgrade at the end of the current period (`marketing_until`);
- the ledger (one upgrade per marketing contact, one scheduled downgrade per pending
  one, under one request) and this period's counters (live = peak = the marketing
  contacts, the pending ones scheduled), so the admin's pages and the billing banner
  read what they would read on the demo.

The secondary indexes are built after the load (`indexes_deferred`), as data.fill does.
1,000,000 contacts take well under a minute here.
"""

from __future__ import annotations

import random

from django.db import connection, transaction
from django.utils import timezone

from contacts.demo.generate import (
    CONTACT_HISTORY_DAYS,
    CONTACT_TYPE_WEIGHTS,
    CUSTOMER_STAGES,
    DEFAULT_SEED,
    DEMO_SOURCES,
    ENGAGEMENT_DAYS,
    HARD_BOUNCED_PERCENT,
    LEAD_STATUS_WEIGHTS,
    LIFECYCLE_WEIGHTS,
    NEVER_ENGAGED_PERCENT,
    STAGE_SCORE_BASE,
    UNSUBSCRIBED_PERCENT,
    Pools,
    creation_decisions,
)
from contacts.demo.load import ensure_sources, indexes_deferred
from contacts.services import contact_reason_columns
from tests.perf.data import CONTACT, CONTACT_COLUMNS, LEDGER, REQUEST, STATE, USAGE, execute, vacuum

# Names drawn once (by frequency) into arrays the statement picks from uniformly.
NAME_SLOTS = 4_000
# Of the contacts that may be marketing (no locked source, not suppressed), this share is;
# with 16 % of the contacts from locked sources and 6 % suppressed, about 40 % of all.
MARKETING_PERCENT = 50
PENDING_PERCENT = 25  # of the marketing contacts: a downgrade due at the period's end
REQUEST_KEY = "bench:read-data"


def _slots(weights: dict) -> list[str]:
    """The choices as 100 slots, each repeated by its weight (the demo's weights sum to 100)."""
    out = [str(choice) for choice, weight in weights.items() for _ in range(weight)]
    if len(out) != 100:
        raise ValueError(f"weights sum to {len(out)}, not 100")
    return out


def fill(count: int) -> dict:
    """Replace every contact with `count` demo-shaped contacts, their ledger and counters;
    VACUUM ANALYZE. Returns what was written."""
    from billing.models import Subscription
    from crm.calendar import BillingCalendar
    from crm.models import Account

    account = Account.load()
    account.update_day, account.yearly_plan, account.time_zone = 1, False, "UTC"
    account.save()
    Subscription.load()
    now = timezone.now().replace(microsecond=0)
    period_start, period_end = BillingCalendar.for_account(account).period_bounds(now)
    rng = random.Random(DEFAULT_SEED)
    pools = Pools.build(DEFAULT_SEED)
    first = rng.choices(range(len(pools.first)), cum_weights=pools.first_weights, k=NAME_SLOTS)
    last = rng.choices(range(len(pools.last)), cum_weights=pools.last_weights, k=NAME_SLOTS)
    sources = ensure_sources()
    decisions = creation_decisions(sources.values())
    source_slots, reason_type, reason_id, reason_name, open_source = [], [], [], [], []
    for name, _kind, share in DEMO_SOURCES:
        source = sources[name]
        columns = contact_reason_columns(decisions[source.pk].status_source)
        source_slots += [len(reason_type) + 1] * share
        reason_type.append(columns["marketing_reason_type"])
        reason_id.append(columns["marketing_reason_id"])
        reason_name.append(columns["marketing_reason_name"])
        open_source.append(not source.locked)
    source_ids = [sources[name].pk for name, _kind, _share in DEMO_SOURCES]
    stages = _slots(LIFECYCLE_WEIGHTS)
    params = {
        "n": count,
        "now": now,
        "period_start": period_start,
        "period_end": period_end,
        "first": [pools.first[i] for i in first],
        "first_slug": [pools.first_slug[i] for i in first],
        "last": [pools.last[i] for i in last],
        "last_slug": [pools.last_slug[i] for i in last],
        "company": [name for name, _ in pools.companies],
        "domain": [domain for _, domain in pools.companies],
        "phone": pools.phones,
        "stage": stages,
        "score_base": [STAGE_SCORE_BASE[stage] for stage in stages],
        "customer": [stage in CUSTOMER_STAGES for stage in stages],
        "lead_status": _slots(LEAD_STATUS_WEIGHTS),
        "contact_type": _slots(CONTACT_TYPE_WEIGHTS),
        "source_slot": source_slots,
        "source_id": source_ids,
        "open_source": open_source,
        "reason_type": reason_type,
        "reason_id": reason_id,
        "reason_name": reason_name,
        "history_days": CONTACT_HISTORY_DAYS,
        "engagement_days": ENGAGEMENT_DAYS,
        "unsub": UNSUBSCRIBED_PERCENT,
        "bounced": UNSUBSCRIBED_PERCENT + HARD_BOUNCED_PERCENT,
        "never": NEVER_ENGAGED_PERCENT,
        "marketing": MARKETING_PERCENT,
        "pending": PENDING_PERCENT,
        "key": REQUEST_KEY,
    }
    execute(f"TRUNCATE {CONTACT}, {LEDGER}, {REQUEST}, {USAGE}, {STATE} RESTART IDENTITY CASCADE")
    with (
        transaction.atomic(),
        indexes_deferred([CONTACT, LEDGER]),
        connection.cursor() as cursor,
    ):
        cursor.execute("SELECT setseed(0.42)")
        # r.* are uniform draws, one set per row: a subquery's volatile random() calls run
        # once per row of generate_series. Array subscripts start at 1.
        cursor.execute(
            f"""
            INSERT INTO {CONTACT} ({CONTACT_COLUMNS})
            SELECT created, created,
                   (%(first_slug)s::text[])[f] || '.' || (%(last_slug)s::text[])[l] || '.' || g || '@'
                       || (%(domain)s::text[])[c],
                   (%(first)s::text[])[f], (%(last)s::text[])[l], (%(company)s::text[])[c], (%(phone)s::text[])[ph],
                   (%(stage)s::text[])[st], (%(lead_status)s::text[])[ls],
                   CASE WHEN (%(customer)s::bool[])[st] THEN 'customer' ELSE (%(contact_type)s::text[])[ct] END,
                   sup < %(unsub)s, sup >= %(unsub)s AND sup < %(bounced)s,
                   least(100, (%(score_base)s::int[])[st] + score),
                   CASE WHEN eng < %(never)s THEN NULL
                        ELSE %(now)s - r_engaged * %(engagement_days)s * interval '1 day' END,
                   (%(source_id)s::int[])[src],
                   CASE WHEN mkt THEN 'marketing' ELSE 'non_marketing' END,
                   CASE WHEN mkt AND pend THEN %(period_end)s::timestamptz END,
                   (%(reason_type)s::text[])[src], (%(reason_id)s::text[])[src], (%(reason_name)s::text[])[src],
                   CASE WHEN mkt THEN created + r_changed * (%(now)s - created) END
            FROM (
                SELECT g, created, f, l, c, ph, st, ls, ct, sup, score, eng, r_engaged,
                       r_changed, src,
                       (%(open_source)s::bool[])[src] AND sup >= %(bounced)s
                           AND r_marketing < %(marketing)s AS mkt,
                       r_pending < %(pending)s AS pend
                FROM (
                    SELECT g,
                           %(now)s - (%(n)s - g + 1)::float8 / %(n)s
                               * %(history_days)s * interval '1 day' AS created,
                           1 + floor(random() * {NAME_SLOTS})::int AS f,
                           1 + floor(random() * {NAME_SLOTS})::int AS l,
                           1 + floor(random() * cardinality(%(company)s::text[]))::int AS c,
                           1 + floor(random() * cardinality(%(phone)s::text[]))::int AS ph,
                           1 + floor(random() * 100)::int AS st,
                           1 + floor(random() * 100)::int AS ls,
                           1 + floor(random() * 100)::int AS ct,
                           (%(source_slot)s::int[])[1 + floor(random() * 100)::int] AS src,
                           floor(random() * 100)::int AS sup,
                           floor(random() * 41)::int AS score,
                           floor(random() * 100)::int AS eng,
                           random() AS r_engaged,
                           random() AS r_changed,
                           floor(random() * 100)::int AS r_marketing,
                           floor(random() * 100)::int AS r_pending
                    FROM generate_series(1, %(n)s) AS g
                ) AS draws
            ) AS rows
            """,
            params,
        )
        cursor.execute(
            f"""
            INSERT INTO {REQUEST} (idempotency_key, operation, fingerprint, source_type,
                                   source_id, source_name, actor_id, requested_at, result)
            VALUES (%(key)s, 'set_marketing', '', 'seed', '', 'Benchmark read data', NULL,
                    %(now)s, '{{}}')
            RETURNING id
            """,
            params,
        )
        params["request"] = cursor.fetchone()[0]
        # The ledger the contacts' statuses imply: each marketing contact's upgrade at its
        # marketing_changed_at, each pending one's downgrade scheduled for the period end.
        cursor.execute(
            f"""
            INSERT INTO {LEDGER} (contact_id, request_id, action, from_status, to_status,
                                  requested_at, effective_at, delta, source_type, source_id,
                                  source_name, actor_id)
            SELECT id, %(request)s, 'upgrade', 'non_marketing', 'marketing',
                   marketing_changed_at, marketing_changed_at, 1, marketing_reason_type,
                   marketing_reason_id, marketing_reason_name, NULL::integer
            FROM {CONTACT} WHERE marketing_status = 'marketing'
            UNION ALL
            SELECT id, %(request)s, 'downgrade_scheduled', 'marketing', 'non_marketing',
                   marketing_changed_at + (%(now)s - marketing_changed_at) / 2,
                   marketing_until, -1, marketing_reason_type, marketing_reason_id,
                   marketing_reason_name, NULL::integer
            FROM {CONTACT} WHERE marketing_until IS NOT NULL
            """,
            params,
        )
        cursor.execute(
            f"""
            SELECT count(*) FILTER (WHERE marketing_status = 'marketing'),
                   count(*) FILTER (WHERE marketing_status = 'marketing'
                                    AND marketing_changed_at < %(period_start)s),
                   count(*) FILTER (WHERE marketing_until IS NOT NULL),
                   max(marketing_changed_at)
            FROM {CONTACT}
            """,
            params,
        )
        live, opening, pending, last = cursor.fetchone()
        cursor.execute(
            f"""
            INSERT INTO {USAGE} (period_start, period_end, opening_count, live_count,
                                 peak_count, scheduled_downgrades, updated_at)
            VALUES (%(period_start)s, %(period_end)s, %(opening)s, %(live)s, %(live)s,
                    %(pending)s, %(now)s)
            """,
            {**params, "opening": opening, "live": live, "pending": pending},
        )
        cursor.execute(
            f"INSERT INTO {STATE} (id, last_change_at) VALUES (1, %(last)s)",
            {"last": max(last or now, now)},
        )
    vacuum()
    return {"contacts": count, "marketing": live, "pending": pending}


def present(count: int) -> bool:
    """Whether the contacts table holds exactly this data set of `count` rows."""
    from contacts.models import Contact
    from contacts.status.models import StatusChangeRequest

    return (
        StatusChangeRequest.objects.filter(idempotency_key=REQUEST_KEY).exists()
        and Contact.objects.order_by("-pk").values_list("pk", flat=True).first() == count
        and not Contact.objects.filter(pk=1, email__endswith="@bench.example").exists()
    )
