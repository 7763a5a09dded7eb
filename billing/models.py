from django.core.validators import MinValueValidator
from django.db import models

from crm.models import BaseModel


class Subscription(BaseModel):
    """What the organisation pays: a base price for a tier of marketing contacts, then blocks.

    Money is in integer minor units of `currency` (cents for USD).
    """

    SINGLETON_PK = 1

    included_contacts = models.PositiveIntegerField(
        default=2_000, help_text="Marketing contacts in the tier."
    )
    base_price = models.PositiveBigIntegerField(
        default=80_000, help_text="Monthly base price, minor units."
    )
    block_size = models.PositiveIntegerField(
        default=5_000, validators=[MinValueValidator(1)], help_text="Contacts per overage block."
    )
    block_price = models.PositiveBigIntegerField(
        default=22_500, help_text="Price of one block, minor units."
    )
    currency = models.CharField(max_length=3, default="USD")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(block_size__gte=1), name="subscription_block_size_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.included_contacts} contacts, {self.base_price} {self.currency}"

    @classmethod
    def load(cls) -> "Subscription":
        subscription, _ = cls.objects.get_or_create(pk=cls.SINGLETON_PK)
        return subscription
