"""The compiled criteria select exactly the contacts a plain-Python evaluation selects.

Random contacts (every whitelisted field, blank and NULL values, sources, engagement
events on the edges of the day windows) and random trees (every field and operator)
are built in one transaction per example and rolled back.
"""

import datetime as dt

from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contacts.criteria import (
    BETWEEN,
    DAYS,
    FIELDS,
    LIST_OPERATORS,
    NO_VALUE_OPERATORS,
    criteria_queryset,
)
from contacts.engagement.models import (
    EngagementEvent,
    EngagementType,
)
from contacts.models import (
    Contact,
    ContactType,
    LeadStatus,
    LifecycleStage,
    Source,
)
from tests.contacts.criteria.criteria_eval import matches

NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=dt.UTC)
# Sources get fixed ids so trees can name them before the example's rows exist.
SOURCES = [
    (1001, "Salesforce", "integration"),
    (1002, "HubSpot sync", "integration"),
    (1003, "Web form", "form"),
    (1004, "123", "manual"),
]
SOURCE_IDS = [s[0] for s in SOURCES] + [9999]
WORDS = ["Acme", "acme", "ACME Inc", "acme widgets", "Widgets-Acme", "a_b", "axb", "100%"]
WORDS += ["o'neil", "x"]
TEXT_VALUES = ["", *WORDS]
LOCALS = ["ann", "bob", "a_b", "c.d"]
DOMAINS = ["example.com", "acme.io", "x_y.org", "xay.org", "mail.example.com"]
TOKENS = ["acme", "ACME", "inc", "widgets", "acme*", "*acme", "a*b", "a_b", "100%", "acme widgets"]
TOKENS += ["*@example.com", "o'neil", "ann*", "*.org", "x"]
SOURCE_NAMES = ["Salesforce", "salesforce", "HubSpot sync", "Web form", "123", "nothing"]

# Instants on both sides of the day windows' edges (1 to 3 days back), and in the future.
instants = st.builds(
    lambda days, nudge: NOW - dt.timedelta(days=days) + dt.timedelta(seconds=nudge),
    st.integers(min_value=0, max_value=3),
    st.sampled_from([-1, 0, 1, 3600]),
)
maybe_instant = st.none() | instants

contact_rows = st.fixed_dictionaries(
    {
        "local": st.sampled_from(LOCALS),
        "domain": st.sampled_from(DOMAINS),
        "first_name": st.sampled_from(TEXT_VALUES),
        "last_name": st.sampled_from(TEXT_VALUES),
        "company": st.sampled_from(TEXT_VALUES),
        "phone": st.sampled_from(["", "+46 70 123", "555"]),
        "lifecycle_stage": st.sampled_from(LifecycleStage.values),
        "lead_status": st.sampled_from(["", *LeadStatus.values]),
        "contact_type": st.sampled_from(ContactType.values),
        "unsubscribed": st.booleans(),
        "hard_bounced": st.booleans(),
        "lead_score": st.integers(min_value=-3, max_value=6),
        "last_engaged_at": maybe_instant,
        "created_at": instants,
        "updated_at": instants,
        "source_id": st.sampled_from(SOURCE_IDS[:-1]),
        # (marketing, pending until): pending dates before and after NOW.
        "marketing": st.sampled_from(
            [(False, None), (True, None), (True, NOW + dt.timedelta(days=3)), (True, NOW)]
        ),
        "events": st.lists(
            st.tuples(st.sampled_from(EngagementType.values[:3]), instants), max_size=4
        ),
    }
)
datasets = st.lists(contact_rows, min_size=1, max_size=8)


def _value_for(name: str, operator: str):
    """A strategy for one canonical operand of `operator` on `name`."""
    if operator in DAYS:
        return st.integers(min_value=1, max_value=3)
    if "TOKEN" in operator:
        return st.sampled_from(TOKENS)
    spec = FIELDS[name]
    if name == "email":
        return st.builds(
            lambda lo, d: f"{lo}@{d}", st.sampled_from(LOCALS), st.sampled_from(DOMAINS)
        )
    if name == "email_domain":
        return st.sampled_from(DOMAINS)
    if name == "source_name":
        return st.sampled_from(SOURCE_NAMES)
    if name == "source_integration":
        return st.sampled_from([*SOURCE_NAMES, *SOURCE_IDS])
    if name == "source_id":
        return st.sampled_from(SOURCE_IDS)
    if name == "contact_id":  # SQLite numbers each example's rows from 1; PostgreSQL goes on
        return st.integers(min_value=1, max_value=10)
    if name == "lead_score":
        return st.integers(min_value=-3, max_value=6)
    if name == "engagement_count":
        return st.integers(min_value=0, max_value=3)
    if spec.kind == "text":
        return st.sampled_from(WORDS)
    if spec.kind == "bool":
        return st.booleans()
    if spec.kind == "datetime":
        return instants.map(lambda d: d.isoformat())
    return st.sampled_from(spec.choices)


@st.composite
def filters(draw):
    name = draw(st.sampled_from(sorted(FIELDS)))
    operator = draw(st.sampled_from(FIELDS[name].operators))
    f = {"propertyName": name, "operator": operator}
    operand = _value_for(name, operator)
    if operator in LIST_OPERATORS:
        f["values"] = draw(st.lists(operand, min_size=1, max_size=3))
    elif operator == BETWEEN:
        low, high = sorted([draw(operand), draw(operand)])
        f["value"], f["highValue"] = low, high
    elif operator not in NO_VALUE_OPERATORS:
        f["value"] = draw(operand)
    if "eventType" in FIELDS[name].extra_keys and draw(st.booleans()):
        f["eventType"] = draw(st.sampled_from(EngagementType.values[:4]))
    if "withinDays" in FIELDS[name].extra_keys and draw(st.booleans()):
        f["withinDays"] = draw(st.integers(min_value=1, max_value=3))
    return f


trees = st.builds(
    lambda groups: {"filterGroups": [{"filters": g} for g in groups]},
    st.lists(st.lists(filters(), min_size=1, max_size=3), max_size=3),
)


class Rollback(Exception):
    pass


def build(rows) -> tuple[list[dict], dict[int, list[dict]]]:
    """Store the dataset; return each contact as the evaluator reads it, and its events."""
    Source.objects.bulk_create(Source(id=i, name=n, kind=k) for i, n, k in SOURCES)
    contacts = []
    for number, row in enumerate(rows):
        marketing, until = row["marketing"]
        # The compiler reads stored columns, so rows are written directly (not through the
        # status service): any stored state the service can leave must be compiled right.
        contacts.append(
            Contact(
                email=f"{row['local']}{number}@{row['domain']}",
                marketing_status="marketing" if marketing else "non_marketing",
                marketing_until=until,
                **{k: row[k] for k in contact_rows_fields},
            )
        )
    created = Contact.objects.bulk_create(contacts)
    for contact, row in zip(created, rows, strict=True):  # auto_now(_add): set them afterwards
        Contact.objects.filter(pk=contact.pk).update(
            created_at=row["created_at"], updated_at=row["updated_at"]
        )
    EngagementEvent.objects.bulk_create(
        EngagementEvent(contact=contact, type=kind, occurred_at=instant)
        for contact, row in zip(created, rows, strict=True)
        for kind, instant in row["events"]
    )
    names = {i: (n, k) for i, n, k in SOURCES}
    people, events = [], {}
    for values in Contact.objects.values():
        name, kind = names[values["source_id"]]
        people.append({**values, "source_name": name, "source_kind": kind})
        events[values["id"]] = list(
            EngagementEvent.objects.filter(contact_id=values["id"]).values("type", "occurred_at")
        )
    return people, events


contact_rows_fields = [
    "first_name",
    "last_name",
    "company",
    "phone",
    "lifecycle_stage",
    "lead_status",
    "contact_type",
    "unsubscribed",
    "hard_bounced",
    "lead_score",
    "last_engaged_at",
    "source_id",
]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=datasets, tree_list=st.lists(trees, min_size=1, max_size=6))
def test_compiled_criteria_select_what_python_evaluation_selects(db, rows, tree_list):
    try:
        with transaction.atomic():
            people, events = build(rows)
            # Each tree, and each of its filters alone (where a flip is not masked by the others).
            singles = [
                {"filterGroups": [{"filters": [f]}]}
                for tree in tree_list
                for group in tree["filterGroups"]
                for f in group["filters"]
            ]
            for tree in [*tree_list, *singles]:
                expected = {p["id"] for p in people if matches(tree, p, events[p["id"]], NOW)}

                selected = set(criteria_queryset(tree, now=NOW).values_list("pk", flat=True))

                assert selected == expected, tree
            raise Rollback
    except Rollback:
        pass
