"""The subscription and the billing dashboard.

The dashboard (`admin:billing_dashboard`, at <admin>/billing/dashboard/) is a view of
the Subscription admin, listed first under "Billing" on the admin index (see
`_add_dashboard`).
"""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from billing.admin.base import (
    CLOSE_PERMISSION,
    DASHBOARD_PAGES,
    DASHBOARD_PERMISSION,
    format_count,
)
from billing.admin.chart import usage_chart
from billing.models import (
    Subscription,
)
from billing.money import MoneyFormField, format_money
from billing.selectors import (
    billing_pending_approvals,
    billing_usage,
)
from contacts.status.models import (
    ApprovalStatus,
)
from crm.admin import (
    SingletonAdmin,
)
from crm.calendar import BillingCalendar

MONEY_FIELDS = {
    "base_price": "Monthly base price, e.g. 800.00 (stored exactly, in cents or the "
    "currency's smallest unit).",
    "block_price": "Price of one overage block a month, e.g. 225.00.",
}


@admin.register(Subscription)
class SubscriptionAdmin(SingletonAdmin):
    fieldsets = [
        (None, {"fields": ["included_contacts", "currency"]}),
        (
            "Prices",
            {
                "fields": ["base_price", "block_size", "block_price", "price_summary"],
                "description": (
                    "Prices are in the currency's units, e.g. 800.00. Each period is billed the base price plus one block price for every started block of "
                    "marketing contacts above the tier, counted at the period's peak."
                ),
            },
        ),
        ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    readonly_fields = ["price_summary", "created_at", "updated_at"]

    list_display = [
        "__str__",
        "included_display",
        "base_price_display",
        "block_size_display",
        "block_price_display",
    ]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name in MONEY_FIELDS:
            currency = Subscription.load().currency
            return MoneyFormField(
                currency=currency,
                label=db_field.verbose_name.capitalize(),
                required=True,
                help_text=MONEY_FIELDS[db_field.name],
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="Included contacts", ordering="included_contacts")
    def included_display(self, obj: Subscription) -> str:
        return format_count(obj.included_contacts)

    @admin.display(description="Base price", ordering="base_price")
    def base_price_display(self, obj: Subscription) -> str:
        return format_money(obj.base_price, obj.currency)

    @admin.display(description="Block size", ordering="block_size")
    def block_size_display(self, obj: Subscription) -> str:
        return format_count(obj.block_size)

    @admin.display(description="Block price", ordering="block_price")
    def block_price_display(self, obj: Subscription) -> str:
        return format_money(obj.block_price, obj.currency)

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["help_texts"] = {
            "block_size": "Marketing contacts per overage block (at least 1).",
            "included_contacts": "Marketing contacts included in the base price (the tier).",
            "currency": "ISO 4217 code, e.g. USD, EUR, SEK.",
        }
        return super().get_form(request, obj, change=change, **kwargs)

    @admin.display(description="In words")
    def price_summary(self, obj: Subscription) -> str:
        if obj is None or obj.pk is None:
            return "-"
        return (
            f"{format_money(obj.base_price, obj.currency)} a month for up to "
            f"{obj.included_contacts:,} marketing contacts, then "
            f"{format_money(obj.block_price, obj.currency)} per {obj.block_size:,} more."
        )

    def dashboard_view(self, request):
        if not request.user.has_perm(DASHBOARD_PERMISSION):
            raise PermissionDenied
        now = timezone.now()
        usage = billing_usage(at=now)
        subscription = Subscription.load()
        currency = usage["currency"]
        estimate, forecast = usage["estimate"], usage["forecast"]
        calendar = BillingCalendar.for_account()
        chart = usage_chart(
            calendar=calendar,
            now=now,
            tier=usage["included_contacts"],
            block_size=usage["block_size"],
        )
        site = self.admin_site.name
        context = {
            **self.admin_site.each_context(request),
            "title": "Billing dashboard",
            "subtitle": None,
            "opts": self.opts,
            "usage": usage,
            "subscription": subscription,
            "money": {
                "estimate_base": format_money(estimate["base"], currency),
                "estimate_overage": format_money(estimate["overage"], currency),
                "estimate_total": format_money(estimate["total"], currency),
                "forecast_overage": format_money(forecast["total"] - estimate["base"], currency),
                "forecast_total": format_money(forecast["total"], currency),
                "pending_saving": format_money(usage["pending_saving"], currency),
                "block_price": format_money(subscription.block_price, currency),
            },
            "next_block": usage["overage_blocks"] + 1,
            "pending_approvals": billing_pending_approvals().count(),
            # The page lists the alerts itself: no banner repeating them above.
            "hide_billing_alert_banner": True,
            "chart": chart,
            "links": {
                "alerts": reverse(f"{site}:billing_alert_changelist")
                + "?acknowledged=no&period=current",
                "approvals": reverse(f"{site}:contacts_pendingapproval_changelist")
                + f"?status__exact={ApprovalStatus.PENDING}",
                "close": reverse(f"{site}:billing_billingperiod_close"),
            },
            "pages": [
                (label, reverse(f"{site}:{app}_{model}_changelist"))
                for label, app, model in DASHBOARD_PAGES
                if request.user.has_perm(f"{app}.view_{model}")
                or request.user.has_perm(f"{app}.change_{model}")
            ],
            "can_close": request.user.has_perm(CLOSE_PERMISSION),
            "can_view_alerts": request.user.has_perm("billing.view_alert"),
            "can_view_approvals": request.user.has_perm("contacts.view_pendingapproval"),
        }
        request.current_app = site
        return TemplateResponse(request, "admin/billing/dashboard.html", context)


def _add_dashboard(site) -> None:
    """Serve the dashboard at <admin>/billing/dashboard/ and list it first under "Billing"
    on the admin index, the app page and the sidebar.

    The dashboard is a view, not a model: Django's app list only lists models, and a
    ModelAdmin's URLs sit under its model's (the sidebar would then highlight that model
    too). Wrapping the site's get_urls and get_app_list is the one place that feeds all
    of them; a project AdminSite subclass in crm/ would be the tidier home for this.
    """
    if getattr(site.get_app_list, "lists_billing_dashboard", False):
        return
    original_urls, original_app_list = site.get_urls, site.get_app_list

    def get_urls():
        view = site.get_model_admin(Subscription).dashboard_view
        # Before Django's own: its final catch-all view would otherwise answer 404.
        return [
            path("billing/dashboard/", site.admin_view(view), name="billing_dashboard"),
            *original_urls(),
        ]

    def get_app_list(request, app_label=None):
        app_list = original_app_list(request, app_label)
        if not request.user.has_perm(DASHBOARD_PERMISSION):
            return app_list
        for app in app_list:
            if app["app_label"] == "billing":
                app["models"].insert(
                    0,
                    {
                        "model": None,
                        "name": "Dashboard",
                        "object_name": "Dashboard",
                        "perms": {"add": False, "change": False, "delete": False, "view": True},
                        "admin_url": reverse(f"{site.name}:billing_dashboard"),
                        "add_url": None,
                        "view_only": True,
                    },
                )
        return app_list

    get_app_list.lists_billing_dashboard = True
    site.get_urls, site.get_app_list = get_urls, get_app_list


_add_dashboard(admin.site)
