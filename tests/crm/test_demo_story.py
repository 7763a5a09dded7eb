"""`seed_demo` tells one story, and every screen reads the same one: the events behind the
"last engaged" dates, the scores they give, the workflows, three closed months with their
invoices, and alerts that follow from the counters."""

import io
import math

import pytest
from django.core.management import call_command
from django.db.models import Max
from django.utils import timezone

from billing.alerts import threshold_crossings
from billing.models import Alert, AlertKind, BillingPeriod, BillingPeriodStatus, Subscription
from billing.pricing import price_for_peak
from billing.services import billing_close_periods
from contacts.criteria import criteria_queryset
from contacts.engagement.models import EngagementEvent
from contacts.models import Contact
from contacts.status.models import PeriodUsage
from contacts.status.rules import settled_q
from crm.demo.story import CLOSE_DELAY, MONTHS_CLOSED, SCORING_RULES
from workflows.models import ScoringRule, Workflow, WorkflowPurpose
from workflows.scoring import scores_recompute
from workflows.selectors import hygiene_preview

N = 400


@pytest.fixture
def story(account, monkeypatch, settings, tmp_path, django_capture_on_commit_callbacks):
    monkeypatch.setenv("ADMIN_PASSWORD", "demo-pass")
    settings.BASE_DIR = tmp_path
    # Billing's listener runs after the seed commits, as it does outside a test.
    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo", contacts=N, seed=11, verbosity=0, stdout=io.StringIO())
    return timezone.now()


def test_every_last_engaged_date_is_the_newest_of_the_contacts_events(story):
    assert EngagementEvent.objects.count() > N
    newest = Contact.objects.annotate(newest=Max("engagement_events__occurred_at"))
    assert newest.filter(last_engaged_at__isnull=False).exists()
    assert newest.filter(last_engaged_at__isnull=True).exists()  # some never engaged
    for contact in newest:
        assert contact.last_engaged_at == contact.newest, contact.email
    # Events belong to their contact's life: none before it was created.
    for event in EngagementEvent.objects.select_related("contact"):
        assert event.occurred_at >= event.contact.created_at


def test_the_hygiene_wizard_and_the_criteria_agree_on_who_is_unengaged(story):
    now = story
    wizard = hygiene_preview(
        options={"include_unengaged": True, "unengaged_days": 90}, now=now
    ).by_reason["unengaged"]
    tree = {
        "filterGroups": [
            {
                "filters": [
                    {
                        "propertyName": "last_engaged",
                        "operator": "NOT_WITHIN_LAST_DAYS",
                        "value": 90,
                    },
                    {"propertyName": "created_at", "operator": "NOT_WITHIN_LAST_DAYS", "value": 90},
                ]
            }
        ]
    }
    by_criteria = criteria_queryset(tree, now=now).filter(settled_q()).count()
    assert wizard == by_criteria > 0
    # "Not engaged in 90 days" is a part of the contacts, not all of them.
    assert 0 < criteria_queryset(tree, now=now).count() < Contact.objects.count()


def test_previous_months_are_closed_each_with_its_invoice(story):
    subscription = Subscription.load()
    periods = list(BillingPeriod.objects.order_by("start").select_related("invoice"))
    assert len(periods) == MONTHS_CLOSED
    for before, after in zip(periods, periods[1:], strict=False):
        assert before.end == after.start
    for period in periods:
        assert period.status == BillingPeriodStatus.CLOSED
        assert period.peak_count == period.counter_peak_count > 0
        # Closed through the close service with the clock just after the month's end.
        assert period.end < period.closed_at <= period.end + CLOSE_DELAY
        invoice = period.invoice
        assert (
            invoice.total == price_for_peak(peak=period.peak_count, subscription=subscription).total
        )
        assert sum(line.amount for line in invoice.lines.all()) == invoice.total
    # The story crosses the tier in its last closed month: that invoice has an overage line.
    last = periods[-1]
    assert last.peak_count > subscription.included_contacts
    assert last.invoice.lines.filter(kind="overage").exists()


def test_verify_billing_agrees_with_the_seeded_ledger(story):
    out = io.StringIO()
    call_command("verify_billing", stdout=out)  # a mismatch raises CommandError
    assert f"All {MONTHS_CLOSED + 1} periods agree with the ledger." in out.getvalue()


def test_alerts_follow_from_each_periods_peak(story):
    subscription = Subscription.load()
    usages = list(PeriodUsage.objects.order_by("period_start"))
    assert len(usages) == MONTHS_CLOSED + 1
    fired_somewhere = False
    for usage in usages:
        expected = set(threshold_crossings(peak=usage.peak_count, subscription=subscription))
        fired = set(
            Alert.objects.filter(period_start=usage.period_start)
            .exclude(kind=AlertKind.SPIKE)
            .values_list("kind", "threshold")
        )
        assert fired == expected, usage.period_start
        fired_somewhere |= bool(fired)
        for alert in Alert.objects.filter(
            period_start=usage.period_start, kind=AlertKind.THRESHOLD
        ):
            assert alert.peak_count >= math.ceil(
                subscription.included_contacts * alert.threshold / 100
            )
    assert fired_somewhere


def test_workflows_and_scoring_rules_tell_the_same_story(story):
    enrollment = Workflow.objects.get(purpose=WorkflowPurpose.ENROLLMENT)
    exclusion = Workflow.objects.get(purpose=WorkflowPurpose.EXCLUSION)
    assert enrollment.enabled and exclusion.enabled
    assert [a["type"] for a in enrollment.actions] == ["set_marketing"]
    assert [a["type"] for a in exclusion.actions] == ["set_non_marketing"]
    assert criteria_queryset(enrollment.criteria, now=story).exists()
    assert ScoringRule.objects.filter(enabled=True).count() == len(SCORING_RULES)
    # The lead scores are what the rules give the events: a recompute changes none.
    assert scores_recompute(now=story, dry_run=True).changed == 0
    assert Contact.objects.filter(lead_score__gt=0).exists()


def test_the_last_month_can_be_left_for_the_close_to_try(
    account, monkeypatch, settings, tmp_path, django_capture_on_commit_callbacks
):
    """--leave-last-month-open: the month that ended last waits for its close, and the close
    then makes its invoice as it would have in the story."""
    monkeypatch.setenv("ADMIN_PASSWORD", "demo-pass")
    settings.BASE_DIR = tmp_path
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "seed_demo",
            contacts=N,
            seed=11,
            leave_last_month_open=True,
            verbosity=0,
            stdout=io.StringIO(),
        )
    closed = BillingPeriodStatus.CLOSED
    assert BillingPeriod.objects.filter(status=closed).count() == MONTHS_CLOSED - 1
    assert [o.status for o in billing_close_periods(dry_run=True)] == ["would_close"]
    assert [o.status for o in billing_close_periods()] == ["closed"]
    assert BillingPeriod.objects.filter(status=closed).count() == MONTHS_CLOSED
    call_command("verify_billing", stdout=io.StringIO())  # a mismatch raises CommandError
