"""Money as people read and type it, stored as integer minor units (DESIGN §1.4).

`format_money` is the one way an amount is shown ("1,025.00 USD") and `MoneyFormField` the
one way it is typed ("1025", "1,025.00"): the admin never shows or asks for cents. Neither
goes through a float.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from django import forms
from django.core.exceptions import ValidationError
from django.utils.html import format_html

# Currencies whose minor unit is the unit itself (ISO 4217 exponent 0).
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"BIF", "CLP", "ISK", "JPY", "KRW", "PYG", "UGX", "VND", "XAF", "XOF"}
)


def minor_digits(currency: str) -> int:
    return 0 if (currency or "").upper() in ZERO_DECIMAL_CURRENCIES else 2


def format_money(amount: int, currency: str) -> str:
    """Integer minor units as "1,025.00 USD" (never through a float); -22500 → "-225.00 USD"."""
    sign = "-" if amount < 0 else ""
    if not minor_digits(currency):
        return f"{sign}{abs(amount):,} {currency}"
    major, minor = divmod(abs(amount), 100)
    return f"{sign}{major:,}.{minor:02d} {currency}"


def format_major(amount: int, currency: str) -> str:
    """Minor units as the plain number a person types: 80000 → "800.00" (USD)."""
    digits = minor_digits(currency)
    if not digits:
        return str(amount)
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 100)
    return f"{sign}{major}.{minor:02d}"


_TYPED = re.compile(r"^-?\d{1,3}(,\d{3})*(\.\d*)?$|^-?\d+(\.\d*)?$")


def parse_money(text: str, currency: str) -> int:
    """ "1,025.50" → 102550 for USD. Raises ValidationError with a sentence."""
    typed = (text or "").strip().removesuffix(currency.upper()).strip() if currency else text
    typed = (typed or "").strip()
    if not _TYPED.match(typed):
        raise ValidationError(
            "Type an amount like 800 or 1,025.50.", code="invalid", params={"value": text}
        )
    try:
        value = Decimal(typed.replace(",", ""))
    except InvalidOperation as error:
        raise ValidationError("Type an amount like 800 or 1,025.50.", code="invalid") from error
    digits = minor_digits(currency)
    minor = value.scaleb(digits)
    if minor != minor.to_integral_value():
        if digits:
            raise ValidationError(
                f"{currency} has {digits} decimals: type at most {digits} after the point.",
                code="precision",
            )
        raise ValidationError(f"{currency} has no decimals: type a whole amount.", code="precision")
    return int(minor)


class MoneyWidget(forms.TextInput):
    """A text box showing minor units in currency units, with the currency after it."""

    def __init__(self, currency: str = "", attrs=None):
        super().__init__(attrs={"inputmode": "decimal", "size": 12, **(attrs or {})})
        self.currency = currency

    def format_value(self, value):
        if isinstance(value, int):
            return format_major(value, self.currency)
        return value

    def render(self, name, value, attrs=None, renderer=None):
        box = super().render(name, value, attrs, renderer)
        if not self.currency:
            return box
        return format_html('{} <span class="money-currency">{}</span>', box, self.currency)


class MoneyFormField(forms.Field):
    """An amount typed in currency units, cleaned to integer minor units."""

    def __init__(self, *, currency: str = "", min_value: int | None = 0, **kwargs):
        self.currency = currency
        self.min_value = min_value
        kwargs.setdefault("widget", MoneyWidget(currency))
        super().__init__(**kwargs)

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if isinstance(value, int):
            return value
        return parse_money(str(value), self.currency)

    def validate(self, value):
        super().validate(value)
        if value is not None and self.min_value is not None and value < self.min_value:
            raise ValidationError(
                f"The amount cannot be below {format_money(self.min_value, self.currency)}.",
                code="min_value",
            )
