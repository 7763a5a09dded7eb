"""The home page's contacts panel: changes waiting for approval and imports, running or recent."""

from __future__ import annotations

from django import template
from django.urls import reverse
from django.utils.formats import number_format

from contacts.imports.models import ContactImport, ImportStatus
from contacts.status.models import ApprovalStatus, PendingApproval

register = template.Library()

RECENT_IMPORTS = 5
ACTIVE_IMPORTS = (ImportStatus.QUEUED, ImportStatus.RUNNING)


def _count(value: int) -> str:
    return number_format(value, force_grouping=True)


@register.inclusion_tag("admin/contacts/home_panel.html", takes_context=True)
def contacts_home_panel(context) -> dict:
    user = context["request"].user
    panel: dict = {}
    if user.has_perm("contacts.view_pendingapproval"):
        waiting = PendingApproval.objects.filter(status=ApprovalStatus.PENDING).count()
        panel["approvals"] = {
            "count": waiting,
            "text": f"{_count(waiting)} change{'s' if waiting != 1 else ''} waiting for approval"
            if waiting
            else "No change waits for approval.",
            "url": reverse("admin:contacts_pendingapproval_changelist") + "?status__exact=pending",
        }
    if user.has_perm("contacts.view_contactimport"):
        recent = list(ContactImport.objects.order_by("-id")[:RECENT_IMPORTS])
        panel["imports"] = [
            {
                "name": item.file_name,
                "status": item.get_status_display(),
                "active": item.status in ACTIVE_IMPORTS,
                "progress": (
                    round(100 * item.processed_rows / item.total_rows)
                    if item.status in ACTIVE_IMPORTS and item.total_rows
                    else None
                ),
                "rows": _count(item.rows),
                "created": item.created_at,
                "url": reverse("admin:contacts_contactimport_change", args=[item.pk]),
            }
            for item in recent
        ]
        panel["imports_url"] = reverse("admin:contacts_contactimport_changelist")
    return panel
