import io
import random

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from contacts.demo.generate import (
    DEMO_EMAIL_SUFFIX,
    Pools,
    generate_batches,
)
from contacts.demo.load import PASSWORD_FILE
from contacts.models import (
    LOCKED_KINDS,
    Contact,
    Source,
    SourceKind,
    StatusSourceType,
)
from contacts.status.models import (
    LedgerAction,
    PeriodUsage,
    StatusChange,
    StatusChangeRequest,
)
from contacts.status.selectors import usage_current

N = 300


def seed(contacts=N, **options) -> str:
    out = io.StringIO()
    call_command("seed_demo", contacts=contacts, seed=7, verbosity=0, stdout=out, **options)
    return out.getvalue()


@pytest.fixture
def seeded(account, monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "demo-pass")
    return seed()


def state() -> dict:
    return {
        "contacts": sorted(Contact.objects.values_list("id", "updated_at", "marketing_status")),
        "ledger": StatusChange.objects.count(),
        "requests": StatusChangeRequest.objects.count(),
        "usage": list(PeriodUsage.objects.values()),
        "sources": list(Source.objects.values()),
        "users": get_user_model().objects.count(),
    }


def test_one_source_of_every_kind_with_its_default(seeded):
    # The demo's channels (a form, a chatflow, an app, an ad account) own a source each.
    sources = Source.objects.filter(form=None, chatflow=None, connected_app=None, ad_account=None)
    assert sorted(s.kind for s in sources) == sorted(SourceKind.values)
    for source in sources:
        assert source.default_marketing == Source.kind_default(source.kind)


def test_the_demo_has_a_hosted_form_and_the_other_channels(seeded, client):
    from contacts.intake.models import (
        AdAccount,
        Chatflow,
        ConnectedApp,
        Form,
    )
    from contacts.outreach.models import MarketingEmail

    assert client.get("/forms/newsletter/").status_code == 200
    assert Form.objects.get(slug="newsletter").source.kind == SourceKind.FORM
    assert Chatflow.objects.count() == ConnectedApp.objects.filter(two_way_sync=True).count() == 1
    assert AdAccount.objects.get().marketing is True
    assert MarketingEmail.objects.get().status == "draft"


def test_contacts_with_realistic_fields(seeded):
    contacts = Contact.objects.all()
    assert contacts.count() == N
    assert contacts.filter(email__endswith=DEMO_EMAIL_SUFFIX).count() == N
    assert contacts.values("lifecycle_stage").distinct().count() >= 5
    assert contacts.values("source").distinct().count() == len(SourceKind.values)
    assert contacts.filter(unsubscribed=True).exists()
    assert contacts.filter(last_engaged_at__isnull=False).exists()
    # Created before the status history that the seeder writes for them.
    first_change = StatusChange.objects.order_by("requested_at").first()
    assert contacts.filter(created_at__gte=first_change.requested_at).count() == 0


def test_status_history_through_the_service_matches_the_counters(seeded):
    now = timezone.now()
    actions = set(StatusChange.objects.values_list("action", flat=True))
    assert actions == set(LedgerAction.values)
    usage = usage_current(at=now)
    billable = Contact.objects.billable(now).count()
    assert usage.live_count == billable
    # The ledger replays to the same count, and the peak is at least the live count.
    replay = StatusChange.objects.filter(effective_at__lte=now).aggregate(n=Sum("delta"))["n"]
    assert replay == billable
    assert usage.peak_count >= usage.live_count
    assert PeriodUsage.objects.count() == 4  # three closed months and the current one


def test_pending_downgrades_from_the_next_update_date(seeded):
    now = timezone.now()
    usage = usage_current(at=now)
    pending = Contact.objects.pending_downgrade(now)
    assert pending.exists()
    assert usage.pending_downgrades == pending.count()
    assert set(pending.values_list("marketing_until", flat=True)) == {usage.next_update}
    # The previous period's downgrades were applied by the rollover.
    assert not Contact.objects.filter(
        marketing_status="marketing", marketing_until__lte=now
    ).exists()


def test_contacts_of_locked_sources_stay_non_marketing(seeded):
    assert not Contact.objects.filter(
        source__kind__in=LOCKED_KINDS, marketing_status="marketing"
    ).exists()


def assert_reasons_from_the_creation_policy():
    """Every demo contact has a reason; one no status change touched has its source's, as
    `contacts_creation_policy` gives it (creation / the source's id / its name)."""
    from contacts.services import contacts_creation_policy

    expected = {}
    for source in Source.objects.all():
        reason = contacts_creation_policy(source=source).status_source
        expected[source.pk] = (reason.type, reason.id, reason.name)
    untouched = 0
    for contact in Contact.objects.select_related("source"):
        reason = (contact.marketing_reason_type, contact.marketing_reason_id)
        assert contact.marketing_reason_type in StatusSourceType.values, contact.email
        if contact.marketing_changed_at is None:
            untouched += 1
            assert (*reason, contact.marketing_reason_name) == expected[contact.source_id]
            assert reason == ("creation", str(contact.source_id))
    assert untouched


def test_every_contact_records_its_sources_reason_from_the_creation_policy(seeded):
    assert_reasons_from_the_creation_policy()
    # Non-marketing contacts of every kind of source say why, locked ones included.
    never_changed = Contact.objects.filter(
        marketing_changed_at=None, marketing_status="non_marketing"
    )
    assert never_changed.filter(source__kind__in=LOCKED_KINDS).exists()


def test_rerun_with_the_same_size_changes_nothing(seeded):
    before = state()
    out = seed()
    assert "nothing to do" in out
    assert state() == before


def test_a_larger_size_adds_the_difference(seeded):
    ledger_before = StatusChange.objects.count()
    seed(contacts=N + 40)
    assert Contact.objects.filter(email__endswith=DEMO_EMAIL_SUFFIX).count() == N + 40
    now = timezone.now()
    assert usage_current(at=now).live_count == Contact.objects.billable(now).count()
    assert StatusChange.objects.count() > ledger_before
    assert_reasons_from_the_creation_policy()


def test_admin_user_from_admin_password(seeded):
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff
    assert admin.check_password("demo-pass")
    assert "http://127.0.0.1:8000/admin/" in seeded


def test_generated_admin_password_is_printed_once_and_saved(
    account, monkeypatch, settings, tmp_path
):
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    settings.BASE_DIR = tmp_path
    out = seed(contacts=10)
    password = (tmp_path / PASSWORD_FILE).read_text().strip()
    assert password in out
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert password not in seed(contacts=10)


def test_generation_is_deterministic_for_a_seed(account):
    now = timezone.now()

    def first_batch(seed: int):
        profiles, batches = generate_batches(
            pools=Pools.build(seed),
            rng=random.Random(seed),
            count=50,
            first_number=1,
            sources=[(1, 3), (2, 1)],
            created_from=now,
            created_to=now,
            now=now,
        )
        return profiles, next(batches)

    assert first_batch(3) == first_batch(3)
    assert first_batch(3) != first_batch(4)


def test_negative_size_is_refused(account):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="zero or more"):
        seed(contacts=-1)
    assert not Contact.objects.exists()


# --- the deferred-index path (PostgreSQL) ------------------------------------------------


def schema_of(tables: list[str]) -> dict:
    """The tables' indexes and constraints, by name, with their definitions."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE tablename = ANY(%s) ORDER BY 1, 2",
            [tables],
        )
        indexes = cursor.fetchall()
        cursor.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE conrelid::regclass::text = ANY(%s) ORDER BY 1, 2",
            [tables],
        )
        constraints = cursor.fetchall()
        cursor.execute(
            "SELECT a.attrelid::regclass::text, a.attnum, a.attstattarget FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indexrelid "
            "WHERE i.indrelid::regclass::text = ANY(%s) AND a.attstattarget > 0 ORDER BY 1, 2",
            [tables],
        )
        statistics = cursor.fetchall()
    return {"indexes": indexes, "constraints": constraints, "statistics": statistics}


def neighbours_of(table: str) -> list[str]:
    """The table and every table with a foreign key to it."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT conrelid::regclass::text FROM pg_constraint "
            "WHERE contype = 'f' AND confrelid = %s::regclass",
            [table],
        )
        return sorted({table, *(row[0] for row in cursor.fetchall())})


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)  # seed_demo commits its own transaction
def test_a_large_seed_defers_the_indexes_and_puts_every_one_back(account, monkeypatch, tmp_path):
    """At the threshold the seeder drops the contacts' and the ledger's indexes and
    constraints, loads, writes the history (which deletes a few contacts while other
    tables' deferred foreign keys point at them) and builds them again."""
    from contacts.demo import load as seed_demo

    size = 2_000
    monkeypatch.setattr(seed_demo, "DEFER_INDEXES_FROM", size)
    monkeypatch.setenv("ADMIN_PASSWORD", "demo-pass")
    monkeypatch.setattr("django.conf.settings.BASE_DIR", tmp_path)
    deferred = []
    original = seed_demo.indexes_deferred

    def spy(tables, **kwargs):
        deferred.append(sorted(tables))
        return original(tables, **kwargs)

    monkeypatch.setattr(seed_demo, "indexes_deferred", spy)
    contacts, ledger = Contact._meta.db_table, StatusChange._meta.db_table
    tables = sorted({*neighbours_of(contacts), *neighbours_of(ledger)})
    before = schema_of(tables)
    assert any(name == "contacts_contact_email_key" for _, name, _ in before["constraints"])
    assert ("contact_company_prefix", 1, 3000) in before["statistics"]

    seed(contacts=size)

    assert deferred == [sorted([contacts, ledger])]  # the path ran, on both tables
    assert schema_of(tables) == before
    assert Contact.objects.filter(email__endswith=DEMO_EMAIL_SUFFIX).count() == size
    now = timezone.now()
    assert usage_current(at=now).live_count == Contact.objects.billable(now).count()
    assert_reasons_from_the_creation_policy()


def test_a_second_run_says_how_to_set_a_new_admin_password(seeded, monkeypatch):
    monkeypatch.setenv("PORT", "8123")

    again = seed(contacts=10)

    assert "Superuser 'admin' exists" in again
    assert "manage.py changepassword admin" in again
    assert "http://127.0.0.1:8123/admin/" in again
