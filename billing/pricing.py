"""The one price function: a period's peak, priced against the subscription (DESIGN §1.4).

Invoices, the estimate, the forecast and the cost preview all call `price_for_peak`,
so they can never disagree. Integer minor units throughout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


def overage_blocks(*, peak: int, included: int, block_size: int) -> int:
    """ceil(max(0, peak - included) / block_size), in integers."""
    if block_size < 1:
        raise ValueError("block_size must be at least 1")
    over = max(0, peak - included)
    return -(-over // block_size)


@dataclass(frozen=True)
class Price:
    peak: int
    included: int
    block_size: int
    block_price: int
    base_price: int
    blocks: int
    currency: str

    @property
    def overage(self) -> int:
        return self.blocks * self.block_price

    @property
    def total(self) -> int:
        return self.base_price + self.overage

    @property
    def headroom(self) -> int:
        """Contacts that can still become marketing before the next block starts."""
        return self.included + self.blocks * self.block_size - self.peak

    def as_dict(self) -> dict:
        return asdict(self) | {
            "overage": self.overage,
            "total": self.total,
            "headroom": self.headroom,
        }


def price_for_peak(*, peak: int, subscription) -> Price:
    return Price(
        peak=peak,
        included=subscription.included_contacts,
        block_size=subscription.block_size,
        block_price=subscription.block_price,
        base_price=subscription.base_price,
        blocks=overage_blocks(
            peak=peak, included=subscription.included_contacts, block_size=subscription.block_size
        ),
        currency=subscription.currency,
    )
