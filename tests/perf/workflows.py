"""i. Re-evaluating a marketing definition over N contacts (DESIGN §1.5, §4).

`python -m tests.perf.run --only workflows` (PostgreSQL). In one run:

- small table (`--small`, 10,000): one contact's event-triggered evaluation
  (`workflows_on_contacts_changed([id])`: the contact newly matches, is enrolled and made
  marketing), median of `--calls` calls on distinct contacts;
- large table (`--contacts`, 1,000,000), the same event timing; the bar: ratio ≤ 1.5;
- the definition — 5 filters, lifecycle stage IN (lead, mql), lead score ≥ 50, engaged
  within 90 days, not unsubscribed, not bounced: about 15 % of the table newly matches —
  run by the service (`workflow_run_now`: preview and guardrails, chunks, enrollments,
  ledger rows, counters) against the same work as ONE hand-written statement (after the
  lock, request and counter rows: INSERT the enrollments … RETURNING, UPDATE the
  contacts, INSERT the ledger rows, move the counters); the bars: service ≤ 1.1 × SQL
  and ≤ 4 s;
- a per-contact loop over the first `--loop` contacts (evaluate the criteria for the
  contact, check its enrollment, enroll it, call the status service), extrapolated to the
  table; the bar: the service ≥ 50 × faster.

Every contender starts from the same state: contacts non-marketing, ledger, counters,
enrollments and runs empty, VACUUM ANALYZE, CHECKPOINT; the median of `--repeat` runs counts.
"""

from __future__ import annotations

import statistics
import time

from django.db import connection, transaction
from django.utils import timezone

from tests.perf import data

ENROLLMENT = "workflows_enrollment"
RUN = "workflows_workflowrun"
BAR_SQL = 1.1  # the service ÷ the one hand-written statement
BAR_SECONDS = 4.0  # the service run at 1,000,000 contacts
BAR_LOOP = 50.0
BAR_EVENT = 1.5

DEFINITION = {
    "filterGroups": [
        {
            "filters": [
                {"propertyName": "lifecycle_stage", "operator": "IN", "values": ["lead", "mql"]},
                {"propertyName": "lead_score", "operator": "GTE", "value": 50},
                {"propertyName": "last_engaged_at", "operator": "WITHIN_LAST_DAYS", "value": 90},
                {"propertyName": "unsubscribed", "operator": "EQ", "value": False},
                {"propertyName": "hard_bounced", "operator": "EQ", "value": False},
            ]
        }
    ]
}
HANDWRITTEN_WHERE = (
    "c.lifecycle_stage IN ('lead', 'mql') AND c.lead_score >= 50 "
    "AND c.last_engaged_at BETWEEN %(since)s AND %(now)s "
    "AND NOT c.unsubscribed AND NOT c.hard_bounced"
)


def _reset() -> None:
    data.execute(f"TRUNCATE {ENROLLMENT}, {RUN} RESTART IDENTITY CASCADE")
    data.reset()


def _workflow(*, event: bool):
    from tests.factories import set_guardrails
    from workflows.models import Workflow
    from workflows.services import workflow_create

    set_guardrails(hard_cap=None, operation_limit=None)
    Workflow.objects.all().delete()
    return workflow_create(
        name="Marketing contact definition (bench)",
        purpose="enrollment",
        enabled=True,
        event_triggered=event,
        criteria=DEFINITION,
        actions=[{"type": "set_marketing"}],
        max_new_marketing=10_000_000,
    )


def _event_timings(calls: int) -> list[float]:
    from contacts.criteria import criteria_queryset
    from contacts.models import Contact
    from workflows.runs import workflows_on_contacts_changed

    _reset()  # VACUUM ANALYZE and CHECKPOINT after the fill: no background writes while timed
    _workflow(event=True)
    ids = list(
        criteria_queryset(DEFINITION, now=timezone.now())
        .order_by("pk")
        .values_list("pk", flat=True)[: calls + 10]
    )
    assert Contact.objects.filter(pk__in=ids).exists()
    for pk in ids[:10]:  # warm-up: the period's counters, the caches
        workflows_on_contacts_changed(contact_ids=[pk])
    seconds = []
    for pk in ids[10:]:
        started = time.perf_counter()
        runs = workflows_on_contacts_changed(contact_ids=[pk])
        seconds.append(time.perf_counter() - started)
        assert len(runs) == 1
    return seconds


_HANDWRITTEN = f"""
WITH enr AS (
    INSERT INTO {ENROLLMENT} (workflow_id, contact_id, run_id, enrolled_at, last_matched_at, times)
    SELECT %(wf)s, c.id, NULL, %(now)s, %(now)s, 1
    FROM {data.CONTACT} c
    WHERE {HANDWRITTEN_WHERE}
      AND NOT EXISTS (SELECT 1 FROM {ENROLLMENT} e
                      WHERE e.workflow_id = %(wf)s AND e.contact_id = c.id AND e.exited_at IS NULL)
    ON CONFLICT (workflow_id, contact_id) DO NOTHING
    RETURNING contact_id
),
upd AS (
    UPDATE {data.CONTACT} c
    SET marketing_status = 'marketing', marketing_until = NULL,
        marketing_reason_type = 'workflow', marketing_reason_id = %(wfid)s,
        marketing_reason_name = 'bench', marketing_changed_at = %(now)s, updated_at = %(now)s
    FROM enr
    WHERE c.id = enr.contact_id AND (c.marketing_status <> 'marketing' OR c.marketing_until IS NOT NULL)
    RETURNING c.id
),
ins AS (
    INSERT INTO {data.LEDGER} (
        contact_id, request_id, action, from_status, to_status, requested_at, effective_at,
        delta, source_type, source_id, source_name, actor_id
    )
    SELECT id, %(request)s, 'upgrade', 'non_marketing', 'marketing', %(now)s, %(now)s,
           1, 'workflow', %(wfid)s, 'bench', NULL
    FROM upd
    RETURNING 1
)
UPDATE {data.USAGE}
SET live_count = live_count + n.n, peak_count = GREATEST(peak_count, live_count + n.n),
    updated_at = %(now)s
FROM (SELECT COUNT(*) AS n FROM ins) AS n
WHERE period_start = %(start)s
"""


def handwritten(workflow) -> float:
    import datetime as dt
    import uuid

    from crm.calendar import BillingCalendar

    def work():
        now = timezone.now()
        start, end = BillingCalendar.for_account().period_bounds(now)
        params = {
            "now": now,
            "since": now - dt.timedelta(days=90),
            "start": start,
            "end": end,
            "wf": workflow.pk,
            "wfid": str(workflow.pk),
        }
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {data.STATE} (id, last_change_at) VALUES (1, %(now)s) "
                "ON CONFLICT (id) DO UPDATE SET last_change_at = EXCLUDED.last_change_at",
                params,
            )
            cursor.execute(
                f"INSERT INTO {data.USAGE} (period_start, period_end, opening_count, live_count, "
                "peak_count, scheduled_downgrades, updated_at) VALUES (%(start)s, %(end)s, 0, 0, "
                "0, 0, %(now)s) ON CONFLICT (period_start) DO NOTHING",
                params,
            )
            cursor.execute(
                f"INSERT INTO {data.REQUEST} (idempotency_key, operation, fingerprint, source_type, "
                "source_id, source_name, actor_id, requested_at, result) "
                f"VALUES ('bench:{uuid.uuid4()}', 'set_marketing', '', 'workflow', '', '', NULL, "
                "%(now)s, '{}') RETURNING id",
                params,
            )
            params["request"] = cursor.fetchone()[0]
            cursor.execute(_HANDWRITTEN, params)

    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def service(workflow) -> tuple[float, dict]:
    from workflows.runs import workflow_run_now

    started = time.perf_counter()
    run = workflow_run_now(workflow=workflow)
    seconds = time.perf_counter() - started
    assert run.status == "done", (run.status, run.error, run.hold_reason)
    return seconds, {"matched": run.matched, "enrolled": run.enrolled, "changed": run.changed}


def per_contact_loop(workflow, ids: list[int]) -> float:
    """The naive interpreter: for each contact, evaluate the criteria, look up its
    enrollment, enroll it and call the status service for it alone."""
    from contacts.criteria import criteria_queryset
    from contacts.status.services import contacts_set_marketing
    from workflows.models import Enrollment
    from workflows.services import workflow_status_source

    source = workflow_status_source(workflow)
    started = time.perf_counter()
    for pk in ids:
        now = timezone.now()
        if not criteria_queryset(workflow.criteria, now=now).filter(pk=pk).exists():
            continue
        if Enrollment.objects.filter(workflow=workflow, contact_id=pk).exists():
            continue
        with transaction.atomic():
            Enrollment.objects.create(
                workflow=workflow, contact_id=pk, enrolled_at=now, last_matched_at=now
            )
            contacts_set_marketing(contacts=pk, source=source)
    return time.perf_counter() - started


def _explain(workflow) -> str:
    """The plan of the service's enrollment statement for the first chunk (EXPLAIN only)."""
    from workflows.models import RunTrigger
    from workflows.runs import (
        WORKFLOW_RANGE_BATCH,
        _enroll_sql,
        _in_range,
        workflow_run_request,
    )
    from workflows.services import workflow_candidates

    run = workflow_run_request(workflow=workflow, trigger=RunTrigger.COMMAND, enqueue=False)
    now = timezone.now()
    new = _in_range(workflow_candidates(workflow, now=now).matching, 1, 1 + WORKFLOW_RANGE_BATCH)
    enroll = _enroll_sql(workflow, run, new, now)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + enroll.sql, enroll.params)
        return "\n".join(row[0] for row in cursor.fetchall())


def run(options, say) -> dict:
    from contacts.models import Contact

    result: dict = {"contacts": options.contacts, "small": options.small}
    say(f"i: {options.small:,} contacts, one contact's event evaluation × {options.calls}")
    data.fill(options.small)
    small = _event_timings(options.calls)
    say(f"i: setting up {options.contacts:,} contacts")
    data.fill(options.contacts)
    say(f"i: {options.contacts:,} contacts, one contact's event evaluation × {options.calls}")
    large = _event_timings(options.calls)
    result["event_small_ms"] = statistics.median(small) * 1000
    result["event_large_ms"] = statistics.median(large) * 1000
    result["event_ratio"] = result["event_large_ms"] / result["event_small_ms"]

    services, handwrittens = [], []
    for attempt in range(options.repeat):
        _reset()
        workflow = _workflow(event=False)
        say(f"i: service run {attempt + 1}/{options.repeat}")
        seconds, counts = service(workflow)
        services.append(seconds)
        result["counts"] = counts
        _reset()
        workflow = _workflow(event=False)
        say(f"i: hand-written SQL {attempt + 1}/{options.repeat}")
        handwrittens.append(handwritten(workflow))
        enrolled = connection.cursor()
        enrolled.execute(f"SELECT COUNT(*) FROM {ENROLLMENT}")
        result["handwritten_enrolled"] = enrolled.fetchone()[0]
    result["service_runs"], result["handwritten_runs"] = services, handwrittens
    result["service_s"] = statistics.median(services)
    result["handwritten_s"] = statistics.median(handwrittens)
    result["sql_ratio"] = result["service_s"] / result["handwritten_s"]

    _reset()
    workflow = _workflow(event=False)
    ids = list(Contact.objects.order_by("pk").values_list("pk", flat=True)[: options.loop])
    say(f"i: per-contact loop over {len(ids):,} contacts")
    loop_s = per_contact_loop(workflow, ids)
    result["loop_sample"] = len(ids)
    result["loop_s"] = loop_s
    result["loop_extrapolated_s"] = loop_s / len(ids) * options.contacts
    result["loop_ratio"] = result["loop_extrapolated_s"] / result["service_s"]
    _reset()
    result["plan_enroll_chunk"] = _explain(_workflow(event=False))
    _reset()
    return result


def rows(i: dict) -> list[tuple[str, str, str]]:
    def verdict(ok: bool) -> str:
        return "meets the bar" if ok else "MISSES the bar"

    counts = i["counts"]
    return [
        (
            f"i. definition (5 filters) over {i['contacts']:,} contacts: service run",
            f"{i['service_s']:.2f} s",
            f"{counts['matched']:,} matched, {counts['enrolled']:,} enrolled, "
            f"{counts['changed']:,} made marketing; runs {', '.join(f'{s:.2f}' for s in i['service_runs'])}",
        ),
        (
            f"i. service run (bar ≤ {BAR_SECONDS:.0f} s)",
            f"{i['service_s']:.2f} s",
            verdict(i["service_s"] <= BAR_SECONDS),
        ),
        (
            "i. the same as one hand-written SQL statement",
            f"{i['handwritten_s']:.2f} s",
            f"{i['handwritten_enrolled']:,} enrolled; runs "
            + ", ".join(f"{s:.2f}" for s in i["handwritten_runs"]),
        ),
        (
            f"i. service ÷ SQL (bar ≤ {BAR_SQL})",
            f"{i['sql_ratio']:.2f}×",
            verdict(i["sql_ratio"] <= BAR_SQL),
        ),
        (
            f"i. per-contact loop, {i['loop_sample']:,} contacts, extrapolated",
            f"{i['loop_extrapolated_s']:,.0f} s",
            f"{i['loop_s']:.1f} s for the sample",
        ),
        (
            f"i. loop ÷ service (bar ≥ {BAR_LOOP:.0f})",
            f"{i['loop_ratio']:,.0f}×",
            verdict(i["loop_ratio"] >= BAR_LOOP),
        ),
        (
            f"i. one contact's event evaluation at {i['small']:,} / {i['contacts']:,}",
            f"{i['event_small_ms']:.1f} / {i['event_large_ms']:.1f} ms",
            f"ratio {i['event_ratio']:.2f} (bar ≤ {BAR_EVENT}): "
            + verdict(i["event_ratio"] <= BAR_EVENT),
        ),
    ]
