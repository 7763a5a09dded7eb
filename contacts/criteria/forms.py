"""The criteria editor: a form field any admin can use (workflows, hygiene, rotation, the
criteria tester).

The widget is django-jsonform's (React, its JS/CSS served from the package's own static
files), driven by `criteria_editor_schema()`, which is generated from the registry; the
server-side validation is `criteria_validate`, whose errors show on the form and inside
the editor, next to the filter at fault.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django_jsonform.forms.fields import JSONFormField

from contacts.criteria.properties import (
    EXTRA_KEYS,
    FIELDS,
    MAX_FILTERS_PER_GROUP,
    MAX_GROUPS,
    OPERATOR_WORDS,
    OPERATORS,
    VALUE_KEYS,
)
from contacts.criteria.validation import Criteria, CriteriaError, criteria_validate
from contacts.engagement.models import EngagementType
from crm.inputs import JSONInputFormMixin

EMPTY_TREE: dict[str, Any] = {"filterGroups": []}


def criteria_editor_schema() -> dict[str, Any]:
    """The schema the admin's criteria editor renders, generated from the registry.

    django-jsonform draws every key of an object, so the optional keys are all
    here and the form field drops the ones left empty (`drop_blank_keys`); the editor
    offers our field names (the HubSpot aliases still validate when typed in JSON).
    """
    fields = [{"title": s.label, "value": s.name} for s in FIELDS.values()]
    operators = [{"title": OPERATOR_WORDS[op], "value": op} for op in OPERATORS]
    event_types = [{"title": "(any)", "value": ""}] + [
        {"title": label, "value": value} for value, label in EngagementType.choices
    ]
    filter_schema = {
        "type": "object",
        "title": "Filter",
        "properties": {
            "propertyName": {"type": "string", "title": "Field", "choices": fields},
            "operator": {"type": "string", "title": "Operator", "choices": operators},
            "value": {
                "type": "string",
                "title": "Value",
                "helpText": "What the field is compared with: for “is between”, the low end; "
                "for “is within the last”, a number of days; in a word, * matches any "
                "letters.",
            },
            "highValue": {"type": "string", "title": "High value (for “is between”)"},
            "values": {
                "type": "array",
                "title": "Values (for “is any of” and “is none of”)",
                "items": {"type": "string"},
            },
            "eventType": {
                "type": "string",
                "title": "Event type (for engagement counts)",
                "choices": event_types,
            },
            "withinDays": {
                "type": "string",
                "title": "Within the last how many days (for engagement counts)",
            },
        },
    }
    return {
        "type": "object",
        "title": "Criteria",
        "properties": {
            "filterGroups": {
                "type": "array",
                "title": "Groups: a contact matches when it meets ANY group",
                "maxItems": MAX_GROUPS,
                "items": {
                    "type": "object",
                    "title": "Group: ALL of its filters must match",
                    "properties": {
                        "filters": {
                            "type": "array",
                            "title": "Filters",
                            "minItems": 1,
                            "maxItems": MAX_FILTERS_PER_GROUP,
                            "items": filter_schema,
                        }
                    },
                },
            }
        },
    }


def drop_blank_keys(tree: Any) -> Any:
    """The editor sends every optional key; an empty one ("", [], null) means "not given"."""
    if not isinstance(tree, dict) or not isinstance(tree.get("filterGroups"), list):
        return tree
    for group in tree["filterGroups"]:
        if not isinstance(group, dict) or not isinstance(group.get("filters"), list):
            continue
        for f in group["filters"]:
            if isinstance(f, dict):
                for key in (*VALUE_KEYS, *EXTRA_KEYS):
                    if key in f and f[key] in ("", [], None):
                        del f[key]
    return tree


class CriteriaFormField(JSONInputFormMixin, JSONFormField):
    """A criteria tree: edited in django-jsonform's editor, validated by `criteria_validate`.

    `cleaned_data[...]` is the tree as written (HubSpot names kept); `self.criteria`
    holds the validated `Criteria` of the last clean.
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("schema", criteria_editor_schema)
        kwargs.setdefault("initial", EMPTY_TREE)
        kwargs.setdefault(
            "help_text",
            "A contact matches when it meets ANY group; a group matches when ALL its "
            "filters do. No groups: no contact matches.",
        )
        super().__init__(**kwargs)
        self.criteria: Criteria | None = None

    def to_python(self, value):
        return drop_blank_keys(super().to_python(value))

    def validate(self, value):
        # django-jsonform's own validator wants every key of its schema present; ours is
        # the stricter one, so only the "required" check is kept from the parents.
        forms.Field.validate(self, value)
        if value in self.empty_values:
            return
        try:
            self.criteria = criteria_validate(value)
        except CriteriaError as exc:
            error_map: dict[str, list[str]] = {}
            for issue in exc.errors:
                key = "§".join(str(c) for c in issue.coords)
                error_map.setdefault(key, []).append(issue.message)
            self.widget.add_error(error_map)
            raise exc.as_validation_error() from exc


class CriteriaForm(forms.Form):
    """The criteria editor on its own (the criteria tester page, and a demo of the field)."""

    criteria = CriteriaFormField(label="Criteria")
