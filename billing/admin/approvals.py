"""Changes the guardrails held, approved or rejected by a user with billing.approve_overage."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from billing.admin.base import (
    APPROVE_PERMISSION,
    ReadOnlyBillingAdmin,
    format_count,
    format_instant,
)
from billing.guardrails import (
    billing_approval_approve,
    billing_approval_reject,
    billing_cost_preview,
)
from billing.models import (
    Subscription,
)
from billing.money import format_money
from contacts.status.models import (
    ApprovalStatus,
    PendingApproval,
)
from contacts.status.reasons import status_reason_text
from crm.models import Account


@admin.register(PendingApproval)
class PendingApprovalAdmin(ReadOnlyBillingAdmin):
    # The model is contacts' (held under the usage lock); its pages are billing's.
    change_form_template = "admin/billing/pendingapproval/change_form.html"
    list_display = [
        "id",
        "requested",
        "requested_by",
        "source_display",
        "new_marketing",
        "cost_display",
        "status",
        "decision",
    ]
    list_display_links = ["id", "requested"]
    list_filter = ["status"]
    list_select_related = ["requested_by", "decided_by"]
    fields = [
        "status",
        "reason",
        "requested_at",
        "requested_by",
        "operation",
        "source_display",
        "contacts_display",
        "new_marketing",
        "live_after",
        "cost_detail",
        "decided_by",
        "decided_at",
        "result_display",
    ]
    readonly_fields = fields
    actions = ["approve_action", "reject_action"]

    def has_approve_permission(self, request) -> bool:
        return request.user.has_perm(APPROVE_PERMISSION)

    def get_changelist_instance(self, request):
        # One read of the prices for the whole page, not one per row.
        changelist = super().get_changelist_instance(request)
        pricing = (Subscription.load(), Account.load())
        for approval in changelist.result_list:
            approval.pricing = pricing
        return changelist

    @staticmethod
    def _cost(obj: PendingApproval) -> dict:
        """What approving it would cost: priced from the counters it was held at."""
        held_at = obj.cost or {}
        if "peak_count" not in held_at:
            return held_at
        subscription, account = getattr(obj, "pricing", (None, None))
        return billing_cost_preview(
            live_count=held_at["live_count"],
            peak_count=held_at["peak_count"],
            would_add=obj.new_marketing,
            subscription=subscription,
            account=account,
        )

    @admin.display(description="Requested", ordering="requested_at")
    def requested(self, obj: PendingApproval) -> str:
        return format_instant(obj.requested_at)

    @admin.display(description="Decided")
    def decision(self, obj: PendingApproval) -> str:
        if obj.decided_at is None:
            return "—"
        return f"{format_instant(obj.decided_at)} by {obj.decided_by or 'a deleted user'}"

    @admin.display(description="Source")
    def source_display(self, obj: PendingApproval) -> str:
        return status_reason_text(obj.source_type, obj.source_id, obj.source_name, obj.requested_by)

    @admin.display(description="Contacts")
    def contacts_display(self, obj: PendingApproval) -> str:
        if obj.contact_ids is not None:
            count = len(obj.contact_ids)
            return f"{count:,} contact{'' if count == 1 else 's'}"
        return "—"

    @admin.display(description="Invoice change")
    def cost_display(self, obj: PendingApproval) -> str:
        cost = self._cost(obj)
        if "invoice_delta" not in cost:
            return "—"
        delta = cost["invoice_delta"]
        if not delta:
            return "no extra cost"
        return "+" + format_money(delta, cost.get("currency", ""))

    @admin.display(description="Cost")
    def cost_detail(self, obj: PendingApproval):
        cost = self._cost(obj)
        if "invoice_delta" not in cost:
            return "—"
        currency = cost.get("currency", "")
        rows = [
            ("Peak", format_count(cost["peak_before"]), format_count(cost["peak_after"])),
            ("Overage blocks", cost["blocks_before"], cost["blocks_after"]),
            (
                "This period's invoice",
                format_money(cost["total_before"], currency),
                format_money(cost["total_after"], currency),
            ),
        ]
        table = format_html_join("", "<tr><th>{}</th><td>{} → {}</td></tr>", rows)
        return format_html(
            '<table class="approval-cost">{}<tr><th>Difference</th><td>{}</td></tr></table>',
            table,
            self.cost_display(obj),
        )

    @admin.display(description="Result")
    def result_display(self, obj: PendingApproval) -> str:
        result = obj.result or {}
        if not result:
            return "—"
        if "error" in result:
            return f"Failed: {result['error']}"
        keys = ("matched", "changed", "cancelled", "already")
        return ", ".join(f"{key} {result[key]:,}" for key in keys if key in result)

    def _decide(self, request, approval: PendingApproval, decision: str) -> None:
        if approval.status != ApprovalStatus.PENDING:
            self.message_user(
                request,
                f"Approval #{approval.pk} was already decided "
                f"({approval.get_status_display().lower()}); nothing was done.",
                messages.WARNING,
            )
            return
        if decision == "approve":
            approval = billing_approval_approve(approval=approval, user=request.user)
            if approval.status == ApprovalStatus.APPROVED:
                result = approval.result
                self.message_user(
                    request,
                    f"Approval #{approval.pk} approved and run: {result.get('changed', 0):,} "
                    f"contacts are now marketing, {result.get('cancelled', 0):,} pending "
                    f"downgrades were cancelled. Live count {result.get('live_count', 0):,}, "
                    f"this period's peak {result.get('peak_count', 0):,}.",
                    messages.SUCCESS,
                )
            else:
                self.message_user(
                    request,
                    f"Approval #{approval.pk} was approved but the change failed: "
                    f"{approval.result.get('error', 'unknown error')}",
                    messages.ERROR,
                )
        else:
            billing_approval_reject(approval=approval, user=request.user)
            self.message_user(
                request,
                f"Approval #{approval.pk} rejected: nothing was changed.",
                messages.SUCCESS,
            )

    @admin.action(description="Approve and run", permissions=["approve"])
    def approve_action(self, request, queryset):
        for approval in queryset.order_by("requested_at"):
            self._decide(request, approval, "approve")

    @admin.action(description="Reject", permissions=["approve"])
    def reject_action(self, request, queryset):
        for approval in queryset.order_by("requested_at"):
            self._decide(request, approval, "reject")

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/decide/",
                self.admin_site.admin_view(self.decide_view),
                name="{}_{}_decide".format(*info),
            ),
            *super().get_urls(),
        ]

    def decide_view(self, request, object_id):
        """POST only, from the detail page's buttons: approve and run, or reject."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_approve_permission(request):
            raise PermissionDenied
        approval = self.get_object(request, unquote(object_id))
        if approval is None:
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)
        decision = request.POST.get("decision")
        if decision not in ("approve", "reject"):
            raise PermissionDenied
        self._decide(request, approval, decision)
        return HttpResponseRedirect(
            reverse(
                f"{self.admin_site.name}:contacts_pendingapproval_change",
                args=[quote(approval.pk)],
            )
        )

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            context["can_decide"] = (
                obj.status == ApprovalStatus.PENDING and self.has_approve_permission(request)
            )
            context["decide_url"] = reverse(
                f"{self.admin_site.name}:contacts_pendingapproval_decide", args=[quote(obj.pk)]
            )
        return super().render_change_form(
            request, context, add=add, change=change, form_url=form_url, obj=obj
        )
