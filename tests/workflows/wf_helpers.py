"""Helpers shared by the workflow tests (test_workflows*.py)."""

from contacts.models import (
    Contact,
    MarketingStatus,
)
from contacts.status.models import StatusChange
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing
from workflows.models import Workflow, WorkflowPurpose
from workflows.services import workflow_create

M = MarketingStatus.MARKETING.value
N = MarketingStatus.NON_MARKETING.value


def tree(*filters) -> dict:
    """One group, the AND of (property, operator, value) triples; a list value means IN."""
    out = []
    for name, operator, value in filters:
        f = {"propertyName": name, "operator": operator}
        if isinstance(value, list):
            f["values"] = value
        elif value is not None:
            f["value"] = value
        out.append(f)
    return {"filterGroups": [{"filters": out}]}


def stage_is(*stages) -> dict:
    return tree(("lifecycle_stage", "IN", list(stages)))


def make_workflow(
    name="MQL definition",
    *,
    criteria=None,
    actions=None,
    purpose=WorkflowPurpose.ENROLLMENT,
    enabled=True,
    **fields,
) -> Workflow:
    return workflow_create(
        name=name,
        criteria=criteria or stage_is("mql"),
        actions=[{"type": "set_marketing"}] if actions is None else actions,
        purpose=purpose,
        enabled=enabled,
        **fields,
    )


def exclusion(name="Unengaged out", *, criteria, **fields) -> Workflow:
    return make_workflow(
        name,
        criteria=criteria,
        actions=[{"type": "set_non_marketing"}],
        purpose=WorkflowPurpose.EXCLUSION,
        **fields,
    )


def statuses() -> dict[str, str]:
    return dict(Contact.objects.values_list("email", "marketing_status"))


def marketing_emails() -> list[str]:
    return sorted(Contact.objects.filter(marketing_status=M).values_list("email", flat=True))


def ledger() -> list[tuple]:
    """The ledger in the order of its requests; within one, by contact (one statement's rows
    come in the order its plan reads them)."""
    return list(
        StatusChange.objects.order_by("request_id", "contact_id", "id").values_list(
            "contact__email", "action", "source_type", "source_id", "source_name"
        )
    )


def make_marketing(*contacts) -> None:
    contacts_set_marketing(
        contacts=[c.pk for c in contacts], source=StatusSource("manual", name="test")
    )


class WorkerKilled(BaseException):
    """Stands for kill -9: no `except Exception` sees it, nothing records it."""
