from django.contrib import admin

from billing.models import Subscription
from crm.admin import SingletonAdmin

# ISO 4217 currencies without a minor unit (amounts are whole units).
ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF"})


def format_money(amount: int, currency: str) -> str:
    """Minor units as a readable amount: 22500 USD → "225.00 USD"."""
    if currency.upper() in ZERO_DECIMAL_CURRENCIES:
        return f"{amount:,} {currency}"
    return f"{amount // 100:,}.{amount % 100:02d} {currency}"


MINOR_UNITS_HELP = "In minor units of the currency (cents for USD): {example}."


@admin.register(Subscription)
class SubscriptionAdmin(SingletonAdmin):
    fieldsets = [
        (None, {"fields": ["included_contacts", "currency"]}),
        (
            "Prices",
            {
                "fields": ["base_price", "block_size", "block_price", "price_summary"],
                "description": (
                    "Money is stored in integer minor units of the currency. Each period is "
                    "billed the base price plus one block price for every started block of "
                    "marketing contacts above the tier, counted at the period's peak."
                ),
            },
        ),
        ("Record", {"fields": ["created_at", "updated_at"], "classes": ["collapse"]}),
    ]
    readonly_fields = ["price_summary", "created_at", "updated_at"]
    list_display = ["__str__", "included_contacts", "base_price", "block_size", "block_price"]

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["help_texts"] = {
            "base_price": "Monthly base price. "
            + MINOR_UNITS_HELP.format(example="80000 = 800.00 USD"),
            "block_price": "Price of one overage block a month. "
            + MINOR_UNITS_HELP.format(example="22500 = 225.00 USD"),
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
