"""Workflows themselves (DESIGN §1.5): create and update them, what a run would act on, and
its preview. Runs are workflows.runs; scoring, hygiene and rotation have their own modules. Status changes go through the one status service
(contacts.status.services), criteria through contacts.criteria.

What a run acts on (`workflow_candidates`) are the NEWLY matching contacts: the criteria's
matches less the contacts with an active enrollment in this workflow. Exclusion wins: a
workflow that sets marketing never enrolls a contact that an enabled exclusion workflow
matches; such contacts are counted as refused (and stay un-enrolled, so they enroll the
day the exclusion stops matching).
"""

import datetime as dt
from dataclasses import dataclass, field

from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from contacts.criteria import criteria_q, criteria_validate
from contacts.models import Contact, StatusSourceType
from contacts.status.guardrails import hold_reason
from contacts.status.results import (
    SET_MARKETING,
    SET_NON_MARKETING,
    StatusError,
    StatusPreview,
    StatusSource,
)
from contacts.status.services import contacts_status_preview
from crm.models import Account
from workflows.models import (
    ActionType,
    Enrollment,
    Workflow,
    WorkflowPurpose,
)

PREVIEW_SAMPLE_SIZE = 20


class WorkflowError(StatusError):
    """A workflow request that cannot be done; the message is meant for the user."""


class RunNotAllowed(WorkflowError):
    pass


def workflow_status_source(workflow: Workflow) -> StatusSource:
    return StatusSource(StatusSourceType.WORKFLOW, id=str(workflow.pk), name=workflow.name)


def workflow_matching(
    workflow: Workflow, *, now: dt.datetime, ids: list[int] | None = None
) -> QuerySet:
    """The contacts (all, or only `ids`) meeting the workflow's criteria at `now`."""
    queryset = Contact.objects.all() if ids is None else Contact.objects.filter(pk__in=ids)
    return queryset.filter(criteria_q(workflow.criteria, now=now))


def _active_enrollment(workflow: Workflow) -> Exists:
    # enrollment_once (workflow, contact) answers the probe.
    return Exists(
        Enrollment.objects.filter(
            workflow_id=workflow.pk, contact_id=OuterRef("pk"), exited_at__isnull=True
        )
    )


def exclusion_q(workflow: Workflow, *, now: dt.datetime) -> Q | None:
    """Contacts an enabled exclusion workflow matches (None: there is none), for a workflow
    that sets marketing. Exclusion wins (DESIGN §1.5)."""
    if ActionType.SET_MARKETING not in workflow.action_types:
        return None
    exclusions = Workflow.objects.filter(enabled=True, purpose=WorkflowPurpose.EXCLUSION).exclude(
        pk=workflow.pk
    )
    q = None
    for other in exclusions:
        if not criteria_validate(other.criteria).groups:
            continue
        other_q = criteria_q(other.criteria, now=now)
        q = other_q if q is None else q | other_q
    return q


@dataclass
class Candidates:
    matching: QuerySet  # meet the criteria
    new: QuerySet  # … newly (no active enrollment), not excluded: the run acts on these
    excluded: QuerySet | None  # … newly, but an exclusion workflow matches them (refused)
    excluded_q: Q | None = None  # the same as a filter over `matching`


def workflow_candidates(
    workflow: Workflow, *, now: dt.datetime, ids: list[int] | None = None
) -> Candidates:
    matching = workflow_matching(workflow, now=now, ids=ids)
    fresh = matching.exclude(_active_enrollment(workflow))
    excluded_q = exclusion_q(workflow, now=now)
    if excluded_q is None:
        return Candidates(matching=matching, new=fresh, excluded=None)
    return Candidates(
        matching=matching,
        new=fresh.exclude(excluded_q),
        excluded=fresh.filter(excluded_q),
        excluded_q=excluded_q & ~Q(_active_enrollment(workflow)),
    )


@dataclass
class WorkflowPreview:
    workflow_id: int
    at: dt.datetime
    matched: int = 0
    would_enroll: int = 0
    refused_excluded: int = 0
    already_enrolled: int = 0
    would_become_marketing: int = 0
    would_schedule_non_marketing: int = 0
    sample: list = field(default_factory=list)  # Contacts, newest first
    status_preview: StatusPreview | None = None
    cost: dict | None = None
    hold_reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "workflow": self.workflow_id,
            "at": self.at.isoformat(),
            "matched": self.matched,
            "would_enroll": self.would_enroll,
            "already_enrolled": self.already_enrolled,
            "refused_excluded": self.refused_excluded,
            "would_become_marketing": self.would_become_marketing,
            "would_schedule_non_marketing": self.would_schedule_non_marketing,
            "cost": self.cost,
            "hold_reasons": self.hold_reasons,
            "sample": [{"id": c.pk, "email": c.email, "name": c.full_name} for c in self.sample],
        }


def workflow_hold_reasons(workflow: Workflow, status_preview: StatusPreview) -> tuple[str, str]:
    """(the workflow's per-run limit reason, the account's guardrails reason), each "" when
    it does not hold."""
    limit = ""
    if status_preview.would_change > workflow.max_new_marketing:
        limit = (
            f"it would make {status_preview.would_change:,} contacts marketing, more than the "
            f"workflow's per-run limit of {workflow.max_new_marketing:,}"
        )
    # The account's guardrails, as the status service will check them under the lock.
    billing = (
        hold_reason(
            new_marketing=status_preview.would_change,
            live_after=status_preview.live_after,
            account=Account.load(),
        )
        or ""
    )
    return limit, billing


def workflow_preview(
    *, workflow: Workflow, now: dt.datetime | None = None, sample_size: int = PREVIEW_SAMPLE_SIZE
) -> WorkflowPreview:
    """What a run would do now: counts, a sample, the billing impact. Writes nothing."""
    now = now or timezone.now()
    preview = WorkflowPreview(workflow_id=workflow.pk, at=now)
    if not criteria_validate(workflow.criteria).groups:
        return preview
    candidates = workflow_candidates(workflow, now=now)
    preview.matched = candidates.matching.count()
    preview.would_enroll = candidates.new.count()
    if candidates.excluded is not None:
        preview.refused_excluded = candidates.excluded.count()
    preview.already_enrolled = preview.matched - preview.would_enroll - preview.refused_excluded
    preview.sample = list(candidates.new.select_related("source").order_by("-id")[:sample_size])
    kinds = workflow.action_types
    if ActionType.SET_MARKETING in kinds:
        status = contacts_status_preview(contacts=candidates.new, operation=SET_MARKETING, at=now)
        preview.status_preview = status
        preview.would_become_marketing = status.would_change
        preview.cost = status.extra.get("cost")
        preview.hold_reasons = [r for r in workflow_hold_reasons(workflow, status) if r]
    elif ActionType.SET_NON_MARKETING in kinds:
        status = contacts_status_preview(
            contacts=candidates.new, operation=SET_NON_MARKETING, at=now
        )
        preview.status_preview = status
        preview.would_schedule_non_marketing = status.would_schedule
        preview.cost = status.extra.get("cost")
    return preview


WORKFLOW_FIELDS = frozenset(
    {
        "name",
        "description",
        "enabled",
        "purpose",
        "criteria",
        "actions",
        "re_enrollment",
        "schedule_minutes",
        "event_triggered",
        "max_new_marketing",
    }
)


def workflow_create(*, actor=None, **fields) -> Workflow:
    unknown = set(fields) - WORKFLOW_FIELDS
    if unknown:
        raise WorkflowError(f"Unknown workflow fields: {', '.join(sorted(unknown))}.")
    workflow = Workflow(created_by=actor if getattr(actor, "pk", None) else None, **fields)
    workflow.full_clean()
    workflow.save()
    return workflow


def workflow_update(*, workflow: Workflow, **fields) -> Workflow:
    unknown = set(fields) - WORKFLOW_FIELDS
    if unknown:
        raise WorkflowError(f"Unknown workflow fields: {', '.join(sorted(unknown))}.")
    for name, value in fields.items():
        setattr(workflow, name, value)
    workflow.full_clean()
    workflow.save()
    return workflow


def workflow_from_two_way_sync(*, app, actor=None) -> Workflow:
    """The two-way-sync rule of a connected app (DESIGN §1.3): "created by this app and meets
    these filters → marketing" is an enrollment workflow with a source filter. Created
    disabled; add the app's filters to the group, then enable it."""
    if not app.two_way_sync:
        raise WorkflowError(f"“{app.name}” has no two-way sync.")
    name = f"Two-way sync: {app.name}"
    suffix = 1
    while Workflow.objects.filter(name=name).exists():
        suffix += 1
        name = f"Two-way sync: {app.name} ({suffix})"
    return workflow_create(
        actor=actor,
        name=name,
        description=f"Contacts created by the integration “{app.name}” that meet these filters "
        "become marketing contacts.",
        purpose=WorkflowPurpose.ENROLLMENT,
        enabled=False,
        event_triggered=True,
        criteria={
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "source_integration", "operator": "EQ", "value": app.pk}
                    ]
                }
            ]
        },
        actions=[{"type": ActionType.SET_MARKETING}],
    )
