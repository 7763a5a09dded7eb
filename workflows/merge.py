"""Workflows' part of a contact merge: the merged-away contact's enrollments and rotation
memberships move to the survivor (contacts.hooks, merge listeners).

It runs inside the merge's transaction, before the merged-away contact is deleted (its
rows would go with it). A workflow either contact was enrolled in keeps the survivor
enrolled, so a rule that already acted on one of the two does not act again on the merged
contact; where both were enrolled, the survivor's enrollment stays and takes the earlier
first enrollment, the later match and both counts.
"""

from __future__ import annotations

from django.db.models import F

from contacts.hooks import ContactsMerged
from contacts.merge.services import merge_move_rows
from workflows.models import Enrollment, RotationMember


def workflows_on_contacts_merged(merge: ContactsMerged) -> dict[str, int]:
    survivor_id, merged_id = merge.survivor_id, merge.merged_id
    both = Enrollment.objects.filter(
        contact_id=merged_id,
        workflow_id__in=Enrollment.objects.filter(contact_id=survivor_id).values("workflow_id"),
    )
    # One UPDATE per workflow both were enrolled in: few (a contact is in few workflows).
    for theirs in both.values(
        "workflow_id", "enrolled_at", "last_matched_at", "times", "exited_at"
    ):
        ours = Enrollment.objects.filter(contact_id=survivor_id, workflow_id=theirs["workflow_id"])
        mine = ours.values("enrolled_at", "last_matched_at", "exited_at").get()
        active = mine["exited_at"] is None or theirs["exited_at"] is None
        ours.update(
            enrolled_at=min(mine["enrolled_at"], theirs["enrolled_at"]),
            last_matched_at=max(mine["last_matched_at"], theirs["last_matched_at"]),
            times=F("times") + theirs["times"],
            exited_at=None if active else max(mine["exited_at"], theirs["exited_at"]),
        )
    enrollments = merge_move_rows(
        Enrollment, survivor_id=survivor_id, merged_id=merged_id, unique_with="workflow"
    )
    # Active memberships are unique per plan; a plan both were active in keeps the survivor's.
    active_plans = RotationMember.objects.filter(
        contact_id=survivor_id, left_at__isnull=True
    ).values("plan_id")
    members = (
        RotationMember.objects.filter(contact_id=merged_id)
        .exclude(left_at__isnull=True, plan_id__in=active_plans)
        .update(contact_id=survivor_id)
    )
    moved = {"enrollments": enrollments, "rotation_members": members}
    return {name: count for name, count in moved.items() if count}
