"""Contact filters: one definition for the API list and the bulk status change "by filter".

Strict on purpose: an unknown value (``marketing_status=foo``, ``pending=maybe``,
``lead_score_min=ten``) is an error naming the parameter, never a silently ignored
filter — a bulk change over a filter that was quietly dropped would hit every contact.

``marketing_status`` and ``pending`` are about the *effective* status at an instant
(``Contact.objects.billable(at)``), not the stored column: a contact whose pending
downgrade date has passed is non-marketing even before the rollover touches it. The
instant is ``now`` by default; a caller may pass a database expression (``Now()``)
instead, which keeps the SQL free of a moving parameter (see contacts.api.views).

Date-times are ISO 8601 with any offset up to ±23:59, converted to UTC before the query
(crm.instants); one whose UTC equivalent is out of range is an error naming the parameter.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from functools import reduce

import django_filters as filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from contacts.models import (
    Contact,
    ContactType,
    LeadStatus,
    LifecycleStage,
    MarketingStatus,
    Source,
    SourceKind,
    normalise_email,
)
from crm.instants import InstantField


class StrictBooleanField(forms.Field):
    """true/false (also 1/0, yes/no); anything else is an error, not "no filter"."""

    TRUE = frozenset({"true", "1", "yes"})
    FALSE = frozenset({"false", "0", "no"})

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in self.TRUE:
            return True
        if text in self.FALSE:
            return False
        raise ValidationError("Enter true or false.", code="invalid")


@extend_schema_field(OpenApiTypes.BOOL)
class StrictBooleanFilter(filters.Filter):
    field_class = StrictBooleanField


class IntegerFilter(filters.NumberFilter):
    field_class = forms.IntegerField


class InstantFilter(filters.IsoDateTimeFilter):
    """An ISO 8601 date-time, compared in UTC (crm.instants)."""

    field_class = InstantField


class ContactFilter(filters.FilterSet):
    marketing_status = filters.ChoiceFilter(
        choices=MarketingStatus.choices,
        method="filter_marketing_status",
        help_text="Effective status now (a contact with a pending downgrade is still marketing).",
    )
    pending = StrictBooleanFilter(
        method="filter_pending",
        help_text="true: marketing contacts scheduled non-marketing at the next update date.",
    )
    source = filters.ModelChoiceFilter(queryset=Source.objects.all(), help_text="Source id.")
    source_kind = filters.ChoiceFilter(field_name="source__kind", choices=SourceKind.choices)
    lifecycle_stage = filters.ChoiceFilter(choices=LifecycleStage.choices)
    lead_status = filters.ChoiceFilter(choices=LeadStatus.choices)
    contact_type = filters.ChoiceFilter(choices=ContactType.choices)
    lead_score_min = IntegerFilter(field_name="lead_score", lookup_expr="gte")
    lead_score_max = IntegerFilter(field_name="lead_score", lookup_expr="lte")
    created_after = InstantFilter(
        field_name="created_at", lookup_expr="gte", help_text="Created at or after (inclusive)."
    )
    created_before = InstantFilter(
        field_name="created_at", lookup_expr="lt", help_text="Created before (exclusive)."
    )
    engaged_after = InstantFilter(
        field_name="last_engaged_at",
        lookup_expr="gte",
        help_text="Last engaged at or after (inclusive).",
    )
    engaged_before = InstantFilter(
        field_name="last_engaged_at", lookup_expr="lt", help_text="Last engaged before (exclusive)."
    )
    email = filters.CharFilter(method="filter_email", help_text="Exact e-mail (case-insensitive).")
    search = filters.CharFilter(
        method="filter_search",
        help_text="E-mail prefix, first or last name prefix, company prefix, or 'first last' "
        "prefixes.",
    )

    class Meta:
        model = Contact
        fields: list[str] = []  # every filter is declared above

    def __init__(self, *args, now=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.now = now if now is not None else timezone.now()

    def filter_marketing_status(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        if value == MarketingStatus.MARKETING:
            return queryset.billable(self.now)
        return queryset.not_billable(self.now)

    def filter_pending(self, queryset: QuerySet, name: str, value: bool) -> QuerySet:
        if value:
            return queryset.pending_downgrade(self.now)  # contact_pending_idx
        return queryset.not_pending(self.now)

    def filter_email(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        # Emails are stored lower-cased: an exact match on the unique index.
        return queryset.filter(email=normalise_email(value))

    def filter_search(self, queryset: QuerySet, name: str, value: str) -> QuerySet:
        return queryset.filter(contact_search_q(value))


def search_branches(term: str) -> list[Q]:
    """What one search term matches, a Q for each index that answers it: the start of the
    email (emails are stored lower-cased) and, unless the term holds an "@", the start of
    the first name, the last name or the company."""
    branches = [Q(email__startswith=normalise_email(term))]
    if "@" not in term:
        branches += [
            Q(first_name__istartswith=term),
            Q(last_name__istartswith=term),
            Q(company__istartswith=term),
        ]
    return branches


def contact_search_q(value: str) -> Q:
    """The contacts search of the API: the start of an email address, a first or last name
    or a company, or 'first last' prefixes. On PostgreSQL each branch has its index, so the
    planner ORs bitmaps instead of scanning the table: the email's pattern-ops index
    (`contacts_contact_email_…_like`; emails are stored lower-cased) and the prefix indexes
    over `UPPER(column::text)`, which is how Django writes `istartswith`:
    `contact_name_prefix` (first name, then last name), `contact_last_name_prefix` and
    `contact_company_prefix`. 'First last' reads the first name's range of the name
    index and tests the last name in its entries, so it never gathers every contact
    whose first name starts with the first word."""
    term = value.strip()
    if not term:
        return Q()
    match = reduce(operator.or_, search_branches(term))
    first, _, last = term.partition(" ")
    if last.strip():
        match |= Q(first_name__istartswith=first, last_name__istartswith=last.strip())
    return match


def contact_filter_params(data) -> dict[str, str]:
    """Check a filter given as a JSON object (the bulk status change) and return it as
    query parameters for ContactFilter.

    Raises ValidationError naming each bad key: an unknown key, a value that is not a
    string/number/boolean, or a value the filter refuses. An empty filter is refused too:
    "every contact" must not be what a typo produces.
    """
    if not isinstance(data, Mapping):
        raise ValidationError(
            'Expected an object of filter parameters, e.g. {"lifecycle_stage": "lead"}.'
        )
    errors: dict[str, list[str]] = {}
    params: dict[str, str] = {}
    known = ContactFilter.base_filters
    for key, value in data.items():
        if key not in known:
            errors[key] = [f"Unknown filter. Known filters: {', '.join(known)}."]
        elif value is None:
            continue
        elif isinstance(value, bool):
            params[key] = "true" if value else "false"
        elif isinstance(value, int | float | str):
            params[key] = str(value)
        else:
            errors[key] = ["Expected a string, a number or a boolean."]
    if not errors:
        filterset = ContactFilter(data=params, queryset=Contact.objects.none())
        if not filterset.is_valid():
            errors = {key: [str(m) for m in messages] for key, messages in filterset.errors.items()}
    if errors:
        raise ValidationError(errors)
    params = {key: value for key, value in params.items() if value.strip()}
    if not params:
        raise ValidationError(
            "Give at least one filter (an empty filter would match every contact)."
        )
    return params


# The API's filter objects are typed: each value has its filter's JSON type. The schema
# publishes the types (contact_filter_schema), the API checks them (contact_filter_type_errors)
# before contact_filter_params, and shows stored parameters typed (contact_filter_as_json).


def _filter_schema(filter_: filters.Filter) -> dict:
    if isinstance(filter_, StrictBooleanFilter):
        return {"type": "boolean"}
    if isinstance(filter_, IntegerFilter | filters.ModelChoiceFilter):
        return {"type": "integer"}
    if isinstance(filter_, filters.IsoDateTimeFilter):
        return {"type": "string", "format": "date-time"}
    if isinstance(filter_, filters.ChoiceFilter):
        return {"type": "string", "enum": [value for value, _ in filter_.extra["choices"]]}
    return {"type": "string"}


def contact_filter_schema() -> dict:
    """The OpenAPI schema of a filter object."""
    properties = {}
    for name, filter_ in ContactFilter.base_filters.items():
        schema = {**_filter_schema(filter_), "nullable": True}
        if filter_.extra.get("help_text"):
            schema["description"] = str(filter_.extra["help_text"])
        properties[name] = schema
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "minProperties": 1,
        "description": "The contacts list's filters as an object, e.g. "
        '{"lifecycle_stage": "lead", "pending": true}; null or "" leaves a filter out, and '
        "at least one must remain.",
    }


_JSON_TYPES = {
    "boolean": (bool, "true or false"),
    "integer": (int, "a whole number"),
    "string": (str, "a string"),
}


def contact_filter_type_errors(data: Mapping) -> dict[str, list[str]]:
    """The keys of a filter object whose value does not have its filter's JSON type."""
    errors = {}
    for key, value in data.items():
        filter_ = ContactFilter.base_filters.get(key)
        if filter_ is None or value is None:
            continue  # unknown keys and nulls: contact_filter_params decides
        expected, words = _JSON_TYPES[_filter_schema(filter_)["type"]]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            errors[key] = [f"Expected {words}."]
    return errors


def contact_filter_as_json(params: Mapping) -> dict:
    """Stored filter parameters (text) as a filter object with typed values."""
    typed = {}
    for key, value in params.items():
        filter_ = ContactFilter.base_filters.get(key)
        kind = _filter_schema(filter_)["type"] if filter_ is not None else "string"
        try:
            if kind == "boolean":
                value = StrictBooleanField().to_python(value)
            elif kind == "integer":
                value = int(value)
        except (TypeError, ValueError, ValidationError):
            pass  # shown as stored
        typed[key] = value
    return typed
