"""Counts in words: "1 block", "2,071 contacts" (thousands separators, the right plural)."""

from __future__ import annotations

from django.utils.translation import ngettext


def counted(count: int, singular: str, plural: str | None = None) -> str:
    """`count` with its noun: counted(1, "block") → "1 block"; counted(5018, "period")
    → "5,018 periods". A noun whose plural is not singular + "s" passes it."""
    noun = ngettext(singular, plural or f"{singular}s", count)
    return f"{count:,} {noun}"
