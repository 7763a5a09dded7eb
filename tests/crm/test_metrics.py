"""/metrics: Prometheus's text, for staff or the scraper's token, with Marketable's own
metrics among django-prometheus's."""

import re

import pytest
from django.test import Client

from contacts.status.services import contacts_set_marketing, contacts_set_non_marketing
from tests.factories import ContactFactory, UserFactory

METRICS = "/metrics"


def sample(text: str, name: str, **labels) -> float:
    """The value of one sample of the exposition (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if wanted else ''} (\S+)$"
    match = re.search(pattern, text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def staff_client(db):
    client = Client()
    client.force_login(UserFactory(username="watcher", is_staff=True))
    return client


def test_staff_read_the_custom_metrics(
    account, staff_client, manual, django_capture_on_commit_callbacks
):
    ann, bob = ContactFactory(), ContactFactory()
    before = staff_client.get(METRICS).content.decode()
    # The counter moves after the change commits.
    with django_capture_on_commit_callbacks(execute=True):
        contacts_set_marketing(contacts=[ann.pk, bob.pk], source=manual)
        contacts_set_non_marketing(contacts=bob, source=manual)

    response = staff_client.get(METRICS)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    for name in (
        "marketable_status_changes_total",
        "marketable_marketing_contacts_live",
        "marketable_marketing_contacts_peak",
        "marketable_marketing_contacts_pending_downgrades",
        "marketable_job_duration_seconds",
        "django_http_requests_total_by_method_total",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text, name
    # Two upgrades and one scheduled downgrade more than before this test.
    for action, added in (("upgrade", 2), ("downgrade_scheduled", 1)):
        assert sample(text, "marketable_status_changes_total", action=action) == (
            sample(before, "marketable_status_changes_total", action=action) + added
        )
    # The counters of this period: both still billable (bob until the next update date).
    assert sample(text, "marketable_marketing_contacts_live") == 2
    assert sample(text, "marketable_marketing_contacts_peak") == 2
    assert sample(text, "marketable_marketing_contacts_pending_downgrades") == 1


def test_a_rolled_back_change_is_not_counted(
    account, staff_client, manual, django_capture_on_commit_callbacks
):
    from django.db import transaction

    ann = ContactFactory()
    before = staff_client.get(METRICS).content.decode()
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        contacts_set_marketing(contacts=ann, source=manual)
        transaction.set_rollback(True)
    assert callbacks == []

    text = staff_client.get(METRICS).content.decode()

    assert sample(text, "marketable_status_changes_total", action="upgrade") == sample(
        before, "marketable_status_changes_total", action="upgrade"
    )
    assert sample(text, "marketable_marketing_contacts_live") == 0


def test_job_durations_are_recorded_by_task(account, staff_client):
    from crm.tasks import expire_stale_jobs

    before = staff_client.get(METRICS).content.decode()
    expire_stale_jobs.delay()

    text = staff_client.get(METRICS).content.decode()

    name = "marketable_job_duration_seconds_count"
    labels = {"job": expire_stale_jobs.name, "outcome": "success"}
    assert sample(text, name, **labels) == sample(before, name, **labels) + 1


def test_the_scraper_reads_with_the_token(db, settings):
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    client = Client()

    response = client.get(METRICS, headers={"Authorization": "Bearer s3cret-scrape-token"})

    assert response.status_code == 200
    assert "marketable_marketing_contacts_live" in response.content.decode()


@pytest.mark.parametrize("token", ["Bearer wrong", "Basic s3cret-scrape-token", "Bearer "])
def test_a_wrong_token_is_401(db, settings, token):
    settings.METRICS_TOKEN = "s3cret-scrape-token"

    response = Client().get(METRICS, headers={"Authorization": token})

    assert response.status_code == 401
    assert "marketable" not in response.content.decode()


def test_no_token_is_configured_so_none_is_accepted(db, settings):
    settings.METRICS_TOKEN = ""

    response = Client().get(METRICS, headers={"Authorization": "Bearer "})

    assert response.status_code == 401


def test_anonymous_is_sent_to_the_login_page(db):
    response = Client().get(METRICS)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_a_signed_in_user_who_is_not_staff_is_refused(db):
    client = Client()
    client.force_login(UserFactory(username="outsider", is_staff=False))

    response = client.get(METRICS)

    assert response.status_code == 403
    assert "marketable" not in response.content.decode()
