"""The criteria editor: a form field any admin (the Workflow admin to come) can use.

The widget is django-jsonform's (React, its JS/CSS served from the package's own
static files), driven by `criteria_editor_schema()`; the server-side validation is
`criteria_validate`, whose errors show on the form and inside the editor.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django_jsonform.forms.fields import JSONFormField

from workflows.criteria import (
    EXTRA_KEYS,
    VALUE_KEYS,
    Criteria,
    CriteriaError,
    criteria_editor_schema,
    criteria_validate,
)

EMPTY_TREE: dict[str, Any] = {"filterGroups": []}


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


class CriteriaFormField(JSONFormField):
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
