"""The data the worker suites run their jobs on, and the end states they expect."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from contacts.models import Contact, Source, SourceKind
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing
from crm.calendar import BillingCalendar
from workflows.models import WorkflowPurpose
from workflows.services import workflow_create


def import_file(rows: int) -> str:
    return "Email,First Name\n" + "".join(f"p{i:06d}@example.com,P{i}\n" for i in range(rows))


def mqls(count: int) -> None:
    """`count` non-marketing MQLs."""
    source, _ = Source.objects.get_or_create(name="Worker tests", kind=SourceKind.MANUAL)
    Contact.objects.bulk_create(
        (
            Contact(email=f"m{i:06d}@example.com", source=source, lifecycle_stage="mql")
            for i in range(count)
        ),
        batch_size=5_000,
    )


def mql_workflow():
    """The enrollment workflow "MQLs are marketing contacts"."""
    return workflow_create(
        name="MQL definition",
        criteria={
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "lifecycle_stage", "operator": "IN", "values": ["mql"]}
                    ]
                }
            ]
        },
        actions=[{"type": "set_marketing"}],
        purpose=WorkflowPurpose.ENROLLMENT,
        enabled=True,
    )


def ended_periods_with_activity(
    *, count: int, per_period: int
) -> list[tuple[dt.datetime, dt.datetime]]:
    """The last `count` ended billing periods, oldest first, each with `per_period` new
    marketing contacts a day after its start: their peaks are per_period × 1, 2, … count."""
    calendar = BillingCalendar.for_account()
    periods = []
    start, _ = calendar.period_bounds(timezone.now())
    for _ in range(count):
        start, end = calendar.period_bounds(start - dt.timedelta(seconds=1))
        periods.insert(0, (start, end))
    source, _ = Source.objects.get_or_create(name="Worker tests", kind=SourceKind.MANUAL)
    for number, (start, _end) in enumerate(periods):
        created = Contact.objects.bulk_create(
            Contact(email=f"c{number}-{i}@example.com", source=source) for i in range(per_period)
        )
        contacts_set_marketing(
            contacts=[contact.pk for contact in created],
            source=StatusSource("manual", name="worker tests"),
            at=start + dt.timedelta(days=1),
        )
    return periods
