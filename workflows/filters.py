"""Filters of the workflows API."""

import django_filters as filters

from contacts.filters import IntegerFilter
from workflows.models import RunStatus, WorkflowRun


class WorkflowRunFilter(filters.FilterSet):
    workflow = IntegerFilter(field_name="workflow_id", help_text="A workflow's id.")
    status = filters.ChoiceFilter(choices=RunStatus.choices)

    class Meta:
        model = WorkflowRun
        fields: list[str] = []  # every filter is declared above
