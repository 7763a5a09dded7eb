"""Criteria: which contacts a workflow, a hygiene policy, a rotation pool or a preview acts on.

A criteria tree is HubSpot's CRM search `filterGroups` — the OR of groups, each the AND of
filters — over a whitelist of contact fields, source facts and engagement facts
(docs/ARCHITECTURE.md, "Criteria", is the user reference):

    {"filterGroups": [{"filters": [
        {"propertyName": "lifecycle_stage", "operator": "IN", "values": ["lead", "mql"]},
        {"propertyName": "engagement_count", "operator": "GTE", "value": 3,
         "eventType": "email_click", "withinDays": 30}]}]}

By concern:

* `properties`: the whitelist — operators, limits and the field registry `FIELDS`
  (with HubSpot's property names as `ALIASES`);
* `validation`: `criteria_validate(tree) -> Criteria`, the JSON Schema of the shape and
  the checks of the meaning, every problem a `CriteriaIssue` in one `CriteriaError`;
* `compiler`: `criteria_q(tree, now=…)` / `criteria_queryset(…)`, the tree as one `Q`
  over `Contact` (one SQL statement to count or list the matches);
* `selectors`: `criteria_preview` (count and sample) and `criteria_describe` (plain words);
* `forms`: the admin's editor, `CriteriaFormField` (django-jsonform) and its schema.

The names below are the package's interface; import them from `contacts.criteria`.
"""

from contacts.criteria.compiler import criteria_q, criteria_queryset, filter_q
from contacts.criteria.properties import (
    ALIASES,
    BETWEEN,
    DAYS,
    EXTRA_KEYS,
    FIELDS,
    LIST_OPERATORS,
    MAX_FILTERS_PER_GROUP,
    MAX_GROUPS,
    MAX_IN_VALUES,
    NO_VALUE_OPERATORS,
    OPERATORS,
    VALUE_KEYS,
    FieldSpec,
    criteria_field,
)
from contacts.criteria.validation import (
    CRITERIA_JSON_SCHEMA,
    Criteria,
    CriteriaError,
    CriteriaIssue,
    Filter,
    criteria_validate,
)

__all__ = [
    "ALIASES",
    "BETWEEN",
    "CRITERIA_JSON_SCHEMA",
    "DAYS",
    "EXTRA_KEYS",
    "FIELDS",
    "LIST_OPERATORS",
    "MAX_FILTERS_PER_GROUP",
    "MAX_GROUPS",
    "MAX_IN_VALUES",
    "NO_VALUE_OPERATORS",
    "OPERATORS",
    "VALUE_KEYS",
    "Criteria",
    "CriteriaError",
    "CriteriaIssue",
    "FieldSpec",
    "Filter",
    "criteria_field",
    "criteria_q",
    "criteria_queryset",
    "criteria_validate",
    "filter_q",
]
