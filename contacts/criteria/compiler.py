"""Compiling a validated criteria tree to one `Q` over `Contact`.

Each filter becomes a `Q` built only from the registry's ORM path; groups are ANDed and
ORed. Engagement facts are correlated `Exists`/`Subquery` over `EngagementEvent`, so a
count or a page of matching contacts is ONE SQL statement: nothing is evaluated contact
by contact in Python.

Why the negative operators are complements: HubSpot's lists include contacts with no
value in "is none of", and a workflow author who writes "lead status is not unqualified"
means every contact that is not known to be unqualified. So NEQ, NOT_IN,
NOT_HAS_PROPERTY, NOT_CONTAINS_TOKEN and NOT_WITHIN_LAST_DAYS match exactly the contacts
their positive operator does not — blank and NULL values included — while
LT/LTE/GT/GTE/BETWEEN never match a missing value.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from typing import Any

from django.db import models
from django.db.models import Exists, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Lower
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    LessThan,
    LessThanOrEqual,
    Lookup,
)

from contacts.criteria.properties import (
    BETWEEN,
    CONTAINS_TOKEN,
    EQ,
    GT,
    GTE,
    HAS_PROPERTY,
    IN,
    LT,
    LTE,
    NEGATIONS,
    WITHIN_LAST_DAYS,
    Kind,
)
from contacts.criteria.validation import Filter, criteria_validate
from contacts.engagement.models import EngagementEvent
from contacts.models import Contact, MarketingStatus, SourceKind
from contacts.status.rules import marketing_q, not_marketing_q


class _Padded(models.Func):
    """' ' || lower(column) || ' ' (the column is NOT NULL): tokens end at the padding."""

    template = "(' ' || LOWER(%(expressions)s) || ' ')"
    output_field = models.CharField()


class _LikePattern(Lookup):
    """`lhs LIKE pattern ESCAPE '\\'`: a pattern built here (never user text unescaped)."""

    lookup_name = "criteria_like"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs} LIKE {rhs} ESCAPE '\\'", [*lhs_params, *rhs_params]


def _like_escape(text: str) -> str:
    return re.sub(r"([\\%_])", r"\\\1", text)


def token_like_pattern(value: str) -> str:
    """CONTAINS_TOKEN's LIKE pattern over " " + lower(field) + " ": a whole space-separated
    token (or phrase); `*` matches any run of characters."""
    return "% " + _like_escape(value.lower()).replace("*", "%") + " %"


def _lower(path: str):
    return Lower(F(path))


def _text_q(f: Filter, operator: str) -> Q:
    path = f.field.path
    if operator == HAS_PROPERTY:
        return ~Q(**{path: ""})
    if operator == CONTAINS_TOKEN:
        return Q(_LikePattern(_Padded(F(path)), token_like_pattern(f.value)))
    if f.field.lowercase_stored:  # e.g. email: the unique index answers EQ and IN
        if operator == EQ:
            return Q(**{path: f.value.lower()})
        return Q(**{f"{path}__in": sorted({v.lower() for v in f.values})})
    if operator == EQ:
        return Q(Exact(_lower(path), f.value.lower()))
    return Q(In(_lower(path), sorted({v.lower() for v in f.values})))


def _plain_q(f: Filter, operator: str, now: dt.datetime) -> Q:
    """Enum, boolean, integer and datetime columns: plain lookups on the registry's path."""
    path = f.field.path
    if operator == EQ:
        return Q(**{path: f.value})
    if operator == IN:
        return Q(**{f"{path}__in": sorted(set(f.values))})
    if operator == BETWEEN:
        return Q(**{f"{path}__range": (f.value, f.high_value)})
    if operator in (LT, LTE, GT, GTE):
        return Q(**{f"{path}__{operator.lower()}": f.value})
    if operator == WITHIN_LAST_DAYS:
        return Q(**{f"{path}__range": (now - dt.timedelta(days=f.value), now)})
    if operator == HAS_PROPERTY:
        if f.field.kind == Kind.BOOL:  # hard_bounced: HubSpot's reason is set only when bounced
            return Q(**{path: True})
        if f.field.nullable:
            return Q(**{f"{path}__isnull": False})
        return ~Q(**{path: ""})
    raise AssertionError(f"{operator} on {f.field.name}")  # pragma: no cover


def _domain_q(f: Filter, operator: str) -> Q:
    # Emails are stored lower-cased, so a plain LIKE '%@domain' (no LOWER) answers it: one
    # pass over the email column in SQL. A reverse(email) index would make it a range scan.
    domains = [f.value] if operator == EQ else sorted(set(f.values))
    return _any(Q(email__endswith="@" + d) for d in domains)


def _marketing_q(f: Filter, operator: str, now: dt.datetime) -> Q:
    """The effective status at `now`: the status service's one rule (contacts.status.rules)."""
    wanted = {f.value} if operator == EQ else set(f.values)
    if wanted == {MarketingStatus.MARKETING}:
        return marketing_q(now)
    if wanted == {MarketingStatus.NON_MARKETING}:
        return not_marketing_q(now)
    return Q(pk__isnull=False)  # both values: every contact


def _integration_q(f: Filter, operator: str) -> Q:
    kind = Q(source__kind=SourceKind.INTEGRATION)
    if operator == HAS_PROPERTY:
        return kind
    wanted = [f.value] if operator == EQ else list(f.values)
    ids = sorted({v for v in wanted if isinstance(v, int)})
    names = sorted({v.lower() for v in wanted if isinstance(v, str)})
    which = Q()
    if ids:
        which |= Q(source_id__in=ids)
    if names:
        which |= Q(In(_lower("source__name"), names))
    return kind & which


def _events(f: Filter, since: dt.datetime | None, now: dt.datetime):
    # engagement_contact_idx (contact, type, -occurred_at) answers each correlated probe.
    events = EngagementEvent.objects.filter(contact=OuterRef("pk"))
    if f.event_type:
        events = events.filter(type=f.event_type)
    if since is not None:
        events = events.filter(occurred_at__gte=since, occurred_at__lte=now)
    return events


def _last_engaged_q(f: Filter, operator: str, now: dt.datetime) -> Q:
    since = now - dt.timedelta(days=f.value) if operator == WITHIN_LAST_DAYS else None
    return Q(Exists(_events(f, since, now)))


def _engagement_count_q(f: Filter, operator: str, now: dt.datetime) -> Q:
    since = now - dt.timedelta(days=f.within_days) if f.within_days else None
    counted = (
        _events(f, since, now)
        .order_by()
        .values("contact")
        .annotate(n=models.Count("pk"))
        .values("n")
    )
    count = Coalesce(Subquery(counted, output_field=models.IntegerField()), 0)
    if operator == BETWEEN:
        return Q(GreaterThanOrEqual(count, f.value)) & Q(LessThanOrEqual(count, f.high_value))
    lookup = {
        EQ: Exact,
        LT: LessThan,
        LTE: LessThanOrEqual,
        GT: GreaterThan,
        GTE: GreaterThanOrEqual,
    }[operator]
    return Q(lookup(count, f.value))


def _any(qs: Iterable[Q]) -> Q:
    result = None
    for q in qs:
        result = q if result is None else result | q
    assert result is not None
    return result


_COMPILERS: dict[str, Callable[[Filter, str, dt.datetime], Q]] = {
    Kind.TEXT: lambda f, op, now: _text_q(f, op),
    Kind.ENUM: _plain_q,
    Kind.BOOL: _plain_q,
    Kind.INT: _plain_q,
    Kind.DATETIME: _plain_q,
    Kind.DOMAIN: lambda f, op, now: _domain_q(f, op),
    Kind.MARKETING: _marketing_q,
    Kind.INTEGRATION: lambda f, op, now: _integration_q(f, op),
    Kind.LAST_ENGAGED: _last_engaged_q,
    Kind.ENGAGEMENT_COUNT: _engagement_count_q,
}


def filter_q(f: Filter, *, now: dt.datetime) -> Q:
    """One validated filter as a Q. A negative operator is the complement of its positive."""
    positive = NEGATIONS.get(f.operator)
    if positive is None:
        return _COMPILERS[f.field.kind](f, f.operator, now)
    q = ~_COMPILERS[f.field.kind](f, positive, now)
    if f.field.nullable:  # NOT (x op v) is unknown, not true, where x is NULL: say it
        q |= Q(**{f"{f.field.path}__isnull": True})
    return q


def criteria_q(tree: Any, *, now: dt.datetime) -> Q:
    """The contacts a tree selects at `now`, as one Q over Contact (validates the tree first).

    An empty tree (no groups) selects no contact: a workflow with no criteria enrols nobody.
    """
    criteria = criteria_validate(tree)
    if not criteria.groups:
        return Q(pk__in=[])
    groups = []
    for group in criteria.groups:
        q = Q()
        for f in group:
            q &= filter_q(f, now=now)
        groups.append(q)
    return _any(groups)


def criteria_queryset(
    tree: Any, *, now: dt.datetime, queryset: models.QuerySet | None = None
) -> models.QuerySet:
    """`queryset` (all contacts by default) narrowed to the tree: one SQL statement to read."""
    base = Contact.objects.all() if queryset is None else queryset
    return base.filter(criteria_q(tree, now=now))
