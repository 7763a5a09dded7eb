"""HubSpot's CRM search, compiled by the project's one criteria compiler.

A search request's `filterGroups` is already a criteria tree; its property names and
enumeration values go through the property table (contacts.hubspot.mapping) to the
criteria fields and values, and `contacts.criteria` validates and compiles it. The
free-text `query` is compiled the same way: each word must start a token of one of
HubSpot's default searchable text properties that Marketable holds.

**One statement a page.** HubSpot pages a search by offset (`after` is the position) and
never past its first 10,000 results (`SEARCH_WINDOW`). So the page query is

    SELECT …, (SELECT COUNT(*) FROM (SELECT id FROM contacts WHERE <criteria>
                                     LIMIT 10000) AS search_window) AS search_total
    FROM contacts WHERE <criteria> ORDER BY <sorts>, id LIMIT <limit> OFFSET <after>

and `total` is that capped count: exact up to 10,000, and 10,000 when more match. The
count is an uncorrelated subquery, computed once, that stops reading at the 10,000th
match — never a COUNT over the whole table; the page is a top-N sort (or an index walk,
sorted by id or a date). A total of 10,000 means "at least"; as on HubSpot, narrow the
filters (`hs_object_id GT <last id>`, sorted by `hs_object_id`) to go past it. Only a
page past the end (empty, with `after` > 0) costs a second, equally bounded, count.
"""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import IntegerField, Q
from django.db.models.expressions import RawSQL

from contacts.criteria import CriteriaError, criteria_q
from contacts.hubspot.errors import HubSpotError, validation_error
from contacts.hubspot.mapping import PROPERTIES, search_value
from contacts.models import Contact
from contacts.selectors import contact_list

SEARCH_WINDOW = 10_000  # HubSpot's limit: results past it are not reachable by `after`
SEARCH_MAX_LIMIT = 200
SEARCH_DEFAULT_LIMIT = 10
MAX_SORTS = 3
MAX_QUERY_WORDS = 10
MAX_QUERY_LENGTH = 1_000
# HubSpot's default searchable properties for contacts that Marketable holds.
QUERY_PROPERTIES = ("firstname", "lastname", "email", "phone", "company")
ASCENDING, DESCENDING = "ASCENDING", "DESCENDING"


@dataclass(frozen=True)
class SearchPage:
    results: list[Contact]
    total: int
    next_after: int | None


def _translate_filter(raw: Any, where: str, problems: list[dict]) -> Any:
    """One filter with HubSpot's names and values as the compiler's; a bad shape is left
    for the compiler to report."""
    if not isinstance(raw, dict) or not isinstance(raw.get("propertyName"), str):
        return raw
    name = raw["propertyName"]
    prop = PROPERTIES.get(name)
    if prop is None or prop.criteria is None:
        problems.append(
            {
                "message": f'Property "{name}" does not exist'
                if prop is None
                else f'Property "{name}" cannot be searched',
                "code": "PROPERTY_DOESNT_EXIST" if prop is None else "NOT_SEARCHABLE",
                "in": f"{where}.propertyName",
                "context": {"propertyName": [name]},
            }
        )
        return raw
    translated = {**raw, "propertyName": prop.criteria}
    for key in ("value", "highValue"):
        if key in translated:
            translated[key] = search_value(prop, translated[key])
    if isinstance(translated.get("values"), list):
        translated["values"] = [search_value(prop, v) for v in translated["values"]]
    return translated


def criteria_tree(filter_groups: Any) -> dict:
    """`filterGroups` as a criteria tree over Marketable's fields; unknown or unsearchable
    properties are refused here, naming HubSpot's property."""
    groups = copy.deepcopy(filter_groups)
    problems: list[dict] = []
    if isinstance(groups, list):
        for g, group in enumerate(groups):
            if isinstance(group, dict) and isinstance(group.get("filters"), list):
                group["filters"] = [
                    _translate_filter(f, f"filterGroups[{g}].filters[{i}]", problems)
                    for i, f in enumerate(group["filters"])
                ]
    if problems:
        raise validation_error("; ".join(p["message"] for p in problems) + ".", errors=problems)
    return {"filterGroups": groups}


def _criteria_error(exc: CriteriaError) -> HubSpotError:
    errors = []
    for issue in exc.errors:
        where = "filterGroups"
        if issue.group is not None:
            where += f"[{issue.group}]"
            if issue.filter is not None:
                where += f".filters[{issue.filter}]"
                if issue.key:
                    where += f".{issue.key}"
        errors.append({"message": str(issue), "code": issue.code.upper(), "in": where})
    return validation_error(f"Invalid search: {exc}", errors=errors)


def _query_q(query: str, now: dt.datetime) -> Q:
    """Each word of the query starts a token of one of the searchable text properties."""
    words = query.split()
    if len(words) > MAX_QUERY_WORDS:
        raise validation_error(f"A query has at most {MAX_QUERY_WORDS} words.")
    q = Q()
    for word in words:
        pattern = word if word.endswith("*") else word + "*"
        tree = {
            "filterGroups": [
                {
                    "filters": [
                        {
                            "propertyName": PROPERTIES[name].criteria,
                            "operator": "CONTAINS_TOKEN",
                            "value": pattern,
                        }
                    ]
                }
                for name in QUERY_PROPERTIES
            ]
        }
        try:
            q &= criteria_q(tree, now=now)
        except CriteriaError as exc:
            raise validation_error(f"Invalid query word {word!r}: {exc.errors[0].message}") from exc
    return q


def search_q(*, filter_groups: Any, query: str, now: dt.datetime) -> Q:
    """The contacts a search selects, as one Q (no filter groups: every contact)."""
    q = Q()
    if filter_groups:
        try:
            q = criteria_q(criteria_tree(filter_groups), now=now)
        except CriteriaError as exc:
            raise _criteria_error(exc) from exc
    if query.strip():
        q &= _query_q(query, now)
    return q


def search_ordering(sorts: list) -> list[str]:
    """HubSpot's sorts (`{"propertyName", "direction"}`, or a name with an optional `-`)
    as an ORM ordering, ending with the id so that offsets are stable."""
    if len(sorts) > MAX_SORTS:
        raise validation_error(f"A search sorts by at most {MAX_SORTS} properties.")
    ordering = []
    for index, sort in enumerate(sorts):
        if isinstance(sort, str):
            name, direction = sort.lstrip("-"), DESCENDING if sort.startswith("-") else ASCENDING
        elif isinstance(sort, dict) and isinstance(sort.get("propertyName"), str):
            name, direction = sort["propertyName"], str(sort.get("direction") or ASCENDING)
        else:
            raise validation_error(
                f'sorts[{index}]: give {{"propertyName": …, "direction": "ASCENDING" or '
                f'"DESCENDING"}}, not {sort!r}.'
            )
        prop = PROPERTIES.get(name)
        if prop is None or prop.sort is None:
            what = "does not exist" if prop is None else "cannot be sorted on"
            raise validation_error(f'sorts[{index}]: property "{name}" {what}.')
        if direction.upper() not in (ASCENDING, DESCENDING):
            raise validation_error(
                f"sorts[{index}]: direction is ASCENDING or DESCENDING, not {direction!r}."
            )
        ordering.append(("-" if direction.upper() == DESCENDING else "") + prop.sort)
    if not ordering or ordering[-1].lstrip("-") != "id":
        ordering.append("id")
    return ordering


def hubspot_contacts_search(
    *, filter_groups: Any, sorts: list, query: str, limit: int, after: int, now: dt.datetime
) -> SearchPage:
    """A page of a search and its total (exact up to `SEARCH_WINDOW`): one query."""
    q = search_q(filter_groups=filter_groups, query=query, now=now)
    ordering = search_ordering(sorts)
    end = min(after + limit, SEARCH_WINDOW)
    window = Contact.objects.filter(q).order_by().values("pk")[:SEARCH_WINDOW]
    window_sql, window_params = window.query.sql_with_params()
    capped_count = RawSQL(
        f"SELECT COUNT(*) FROM ({window_sql}) AS search_window",
        window_params,
        output_field=IntegerField(),
    )
    page = list(
        contact_list().filter(q).annotate(search_total=capped_count).order_by(*ordering)[after:end]
    )
    if page:
        total = page[0].search_total
    elif after == 0:
        total = 0
    else:
        total = window.count()
    next_after = after + len(page) if page and after + len(page) < total else None
    return SearchPage(results=page, total=total, next_after=next_after)
