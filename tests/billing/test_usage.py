import datetime as dt

from billing.models import DailyUsage
from billing.selectors import billing_usage
from contacts.status.results import StatusSource
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from tests.conftest import at

SRC = StatusSource("import", name="usage test")


def test_usage_prices_the_peak_and_forecasts_from_the_recent_rate(
    account, subscription, make_contacts
):
    people = make_contacts(2_500)
    contacts_set_marketing(contacts=people, source=SRC, at=at(2026, 11, 3))
    contacts_set_non_marketing(
        contacts=list(people.values_list("pk", flat=True)[:600]), source=SRC, at=at(2026, 11, 4)
    )
    # 700 new marketing contacts over the last week: 100 a day.
    DailyUsage.objects.create(day=dt.date(2026, 11, 9), max_count=2_500, became_marketing=700)

    usage = billing_usage(at=at(2026, 11, 11))

    assert (usage["live_count"], usage["peak_count"], usage["pending_downgrades"]) == (
        2_500,
        2_500,
        600,
    )
    assert (usage["overage_blocks"], usage["headroom"], usage["percent_used"]) == (1, 4_500, 125.0)
    assert usage["estimate"] == {"base": 80_000, "overage": 22_500, "total": 102_500}
    assert usage["forecast"]["rate_per_day"] == 100.0
    assert usage["forecast"]["days_left"] == 20.0
    assert usage["forecast"]["peak_count"] == 2_500 + 2_000
    assert usage["forecast"]["total"] == 102_500
    assert usage["pending_saving"] == 22_500  # next period opens at 1,900: within the tier
    assert usage["next_update_date"] == at(2026, 12, 1)
