"""Bringing a HubSpot contacts export: detection, mapping, statuses kept as a migration.

Runs on SQLite and PostgreSQL; on PostgreSQL the COPY / ON CONFLICT path runs, and the
portable path is forced once too.
"""

import datetime as dt

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.db.models import Sum
from rest_framework.test import APIClient

from billing.guardrails import billing_approval_approve
from contacts.imports import migration, staging
from contacts.imports.models import ContactImport, HubSpotRecord, ImportRowError, ImportStatus
from contacts.imports.parsing import ImportFileError, ImportNotAllowed
from contacts.imports.services import (
    contact_import_commit,
    contact_import_create,
    contact_import_preview,
    contact_import_resume,
    contact_import_run,
    contact_import_sync,
)
from contacts.models import Contact
from contacts.status.models import PendingApproval, StatusChange
from contacts.status.results import StatusSource
from contacts.status.selectors import ledger_replay, usage_current
from contacts.status.services import contacts_delete, contacts_set_marketing
from crm.calendar import BillingCalendar
from tests.factories import ContactFactory, UserFactory, set_guardrails

M, N = "marketing", "non_marketing"
HEADER = (
    "Record ID,First Name,Last Name,Email,Phone Number,Company Name,Marketing contact status,"
    "Lifecycle Stage,Lead Status,Create Date,Last Activity Date,HubSpot Score,Original Source,"
    "Unsubscribed from all email\n"
)
EXPORT = HEADER + (
    "101,Ann,Able,ann@example.com,+1 555 0101,Acme,Marketing contact,Marketing Qualified Lead,"
    "In Progress,2024-03-05 14:22,2024-06-01 09:00,12,Organic Search,false\n"
    "102,Bob,Baker,bob@example.com,,Acme,Non-marketing contact,Lead,New,2023-11-20 08:05,,0,"
    "Offline Sources,true\n"
    "103,Cat,Cole,cat@example.com,,Beta,Set to non-marketing contact at the next update,"
    "Customer,,2022-01-31 23:59,,40,Direct Traffic,false\n"
    "104,Dan,Dunn,dan@example.com,,Gamma,Marketing contact,Subscriber,,2024-01-02 10:00,,5,"
    "Paid Social,false\n"
    "105,Eve,Eng,not-an-email,,Delta,Marketing contact,Lead,,2024-01-02 10:00,,0,Direct,false\n"
    "106,Fay,Fox,fay@example.com,,Delta,Maybe,Lead,,2024-01-02 10:00,,0,Direct,false\n"
    "107,Gus,Gray,gus@example.com,,Delta,Marketing contact,Lead,,05/03/2024,,0,Direct,false\n"
    "abc,Hal,Hill,hal@example.com,,Delta,Marketing contact,Lead,,2024-01-02 10:00,,0,Direct,"
    "false\n"
)


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def dan(account):
    """Dan is in Marketable already, non-marketing, with his own name."""
    return ContactFactory(email="dan@example.com", first_name="Daniel")


def upload(text: str, name: str = "hubspot-contacts.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), "text/csv")


def bring(text: str, *, actor=None, name="hubspot-contacts.csv", **kwargs) -> ContactImport:
    contact_import = contact_import_create(
        file=upload(text, name), file_name=name, actor=actor, **kwargs
    )
    contact_import_preview(contact_import=contact_import, actor=actor)
    contact_import_commit(contact_import=contact_import, actor=actor, enqueue=False)
    return contact_import_run(contact_import_id=contact_import.pk)


def statuses() -> dict[str, tuple[str, bool]]:
    """Each contact's stored status and whether a downgrade is scheduled."""
    return {
        email: (status, until is not None)
        for email, status, until in Contact.objects.values_list(
            "email", "marketing_status", "marketing_until"
        )
    }


def assert_books_balance() -> None:
    """The live count equals a recount and the ledger's replay, the peak the replay's."""
    now = dt.datetime.now(dt.UTC)
    usage = usage_current(at=now)
    start, end = BillingCalendar.for_account().period_bounds(now)
    replay = ledger_replay(start=start, end=end)
    summed = StatusChange.objects.filter(effective_at__lte=now).aggregate(s=Sum("delta"))["s"]
    assert usage.live_count == Contact.objects.billable(now).count() == (summed or 0)
    assert replay.closing_count == usage.live_count
    assert replay.peak_count == usage.peak_count


def test_a_hubspot_export_is_detected_and_mapped_by_the_property_tables_labels(account):
    contact_import = contact_import_create(file=upload(EXPORT), file_name="hs.csv")

    assert contact_import.format == "hubspot"
    assert contact_import.mapping == {
        "Record ID": "hubspot_record_id",
        "First Name": "first_name",
        "Last Name": "last_name",
        "Email": "email",
        "Phone Number": "phone",
        "Company Name": "company",
        "Marketing contact status": "hubspot_marketing",
        "Lifecycle Stage": "lifecycle_stage",
        "Lead Status": "lead_status",
        "Create Date": "hubspot_created_at",
        "Last Activity Date": "",
        "HubSpot Score": "",
        "Original Source": "",
        "Unsubscribed from all email": "unsubscribed",
    }


def test_the_export_keeps_each_status_as_a_migration_and_reports_bad_rows(
    account, dan, marketing_ops
):
    done = bring(EXPORT, actor=marketing_ops)

    assert (done.status, done.rows, done.created_count, done.updated_count) == ("done", 8, 3, 1)
    assert done.invalid_count == 4 and done.imported_count + done.reported_count == done.rows
    assert list(
        ImportRowError.objects.filter(contact_import=done).values_list("line", "column", "message")
    ) == [
        (6, "Email", "“not-an-email” is not a valid email address."),
        (
            7,
            "Marketing contact status",
            "“Maybe” is not a marketing contact status (“Marketing contact”, “Non-marketing "
            "contact” or “Set to non-marketing contact at the next update”).",
        ),
        (
            8,
            "Create Date",
            "“05/03/2024” is not a date HubSpot exports (like 2024-03-05 14:22, in the "
            "account's time zone, or 2024-03-05T14:22:00Z).",
        ),
        (9, "Record ID", "“abc” is not a HubSpot record ID (a number)."),
    ]
    # Marketing stays marketing, non-marketing stays non-marketing (not a default), the
    # pending one is marketing with its downgrade at the next update date, and Dan — whom
    # the file says is marketing — is upgraded.
    assert statuses() == {
        "ann@example.com": (M, False),
        "bob@example.com": (N, False),
        "cat@example.com": (M, True),
        "dan@example.com": (M, False),
    }
    next_update = BillingCalendar.for_account().period_bounds(dt.datetime.now(dt.UTC))[1]
    assert Contact.objects.get(email="cat@example.com").marketing_until == next_update
    ledger = StatusChange.objects.order_by("id").values_list(
        "contact__email", "action", "source_type", "source_id", "source_name"
    )
    reason = ("import", str(done.pk), "Migrated from HubSpot: hubspot-contacts.csv")
    assert sorted(ledger) == sorted(
        [
            ("ann@example.com", "upgrade", *reason),
            ("cat@example.com", "upgrade", *reason),
            ("dan@example.com", "upgrade", *reason),
            ("cat@example.com", "downgrade_scheduled", *reason),
        ]
    )
    bob = Contact.objects.get(email="bob@example.com")
    assert (bob.marketing_reason_type, bob.marketing_reason_name) == ("import", reason[2])
    assert (bob.unsubscribed, bob.lead_status, bob.first_name) == (True, "new", "Bob")
    ann = Contact.objects.get(email="ann@example.com")
    assert (ann.lifecycle_stage, ann.lead_status, ann.phone) == (
        "mql",
        "in_progress",
        "+1 555 0101",
    )
    assert Contact.objects.get(email="dan@example.com").first_name == "Dan"
    # Record ids and HubSpot's create dates (UTC, the account's zone) kept beside the contacts;
    # the contacts' own created_at is when they came to Marketable.
    assert dict(HubSpotRecord.objects.values_list("contact__email", "record_id")) == {
        "ann@example.com": "101",
        "bob@example.com": "102",
        "cat@example.com": "103",
        "dan@example.com": "104",
    }
    assert HubSpotRecord.objects.get(record_id="101").hubspot_created_at == dt.datetime(
        2024, 3, 5, 14, 22, tzinfo=dt.UTC
    )
    assert ann.created_at.date() == dt.date.today()
    assert (done.marketing_count, done.marketing_result["scheduled"]) == (3, 1)
    assert_books_balance()


@pytest.mark.parametrize("portable", [False, True], ids=["fast", "portable"])
def test_importing_the_export_again_changes_nothing(
    account, dan, marketing_ops, monkeypatch, portable
):
    monkeypatch.setattr(staging, "FORCE_PORTABLE", portable)
    bring(EXPORT, actor=marketing_ops)
    before = (
        list(Contact.objects.order_by("email").values()),
        list(HubSpotRecord.objects.order_by("record_id").values("contact_id", "record_id")),
        StatusChange.objects.count(),
    )

    again = bring(EXPORT, actor=marketing_ops)

    assert (again.status, again.created_count, again.updated_count) == ("done", 0, 0)
    assert again.unchanged_count == 4 and again.marketing_count == 0
    after = (
        list(Contact.objects.order_by("email").values()),
        list(HubSpotRecord.objects.order_by("record_id").values("contact_id", "record_id")),
        StatusChange.objects.count(),
    )
    assert after == before
    assert_books_balance()


def test_a_record_id_repeated_or_known_under_another_email_is_a_row_error(account, marketing_ops):
    bring(
        HEADER + "7,Ann,,ann@example.com,,,Non-marketing contact,Lead,,,,,,\n", actor=marketing_ops
    )

    done = bring(
        HEADER
        + "7,Ann,,ann.new@example.com,,,Non-marketing contact,Lead,,,,,,\n"
        + "8,Bo,,bo@example.com,,,Non-marketing contact,Lead,,,,,,\n"
        + "8,Bo,,bo2@example.com,,,Non-marketing contact,Lead,,,,,,\n",
        actor=marketing_ops,
    )

    assert (done.created_count, done.invalid_count) == (1, 2)
    assert list(
        ImportRowError.objects.filter(contact_import=done).values_list("line", "message")
    ) == [
        (
            2,
            "Record ID 7 was imported before as ann@example.com, not ann.new@example.com: change "
            "the email of that contact first (or remove the record ID from this row) and import "
            "this line again. Not imported.",
        ),
        (
            3,
            "Record ID 8 is also on line 4: one HubSpot record is one contact, and the last row "
            "with it is imported instead.",
        ),
    ]
    assert sorted(Contact.objects.values_list("email", flat=True)) == [
        "ann@example.com",
        "bo2@example.com",
    ]


def test_an_existing_marketing_contact_is_never_downgraded_by_the_file(account, marketing_ops):
    ContactFactory(email="ann@example.com")
    ContactFactory(email="cat@example.com")
    contacts_set_marketing(
        contacts=Contact.objects.all(), source=StatusSource("manual", name="test")
    )

    bring(
        HEADER
        + "1,Ann,,ann@example.com,,,Non-marketing contact,Lead,,,,,,\n"
        + "3,Cat,,cat@example.com,,,Set to non-marketing contact at the next update,Lead,,,,,,\n",
        actor=marketing_ops,
    )

    assert statuses() == {"ann@example.com": (M, False), "cat@example.com": (M, False)}
    assert_books_balance()


def test_the_preview_counts_the_files_statuses_and_prices_them(account, dan, marketing_ops):
    contact_import = contact_import_create(
        file=upload(EXPORT), file_name="hs.csv", actor=marketing_ops
    )
    contact_import_preview(contact_import=contact_import, actor=marketing_ops)

    preview = contact_import.preview
    assert preview["file_statuses"] == {
        "marketing": 2,
        "pending": 1,
        "non_marketing": 1,
        "unset": 0,
        "would_schedule": 1,
    }
    assert (preview["new"], preview["updated"], preview["becomes_marketing"]) == (3, 1, 3)
    assert preview["status_preview"]["live_after"] == preview["status_preview"]["live_count"] + 3
    assert "cost" in preview["status_preview"]["extra"]
    assert not Contact.objects.exclude(pk=dan.pk).exists()


def test_without_the_status_permission_the_statuses_are_left_out_and_said_so(account, sales):
    contact_import = contact_import_create(file=upload(EXPORT), file_name="hs.csv", actor=sales)
    contact_import_preview(contact_import=contact_import, actor=sales)

    assert contact_import.mapping["Marketing contact status"] == ""
    assert contact_import.preview["notes"] == [
        "The column “Marketing contact status” is not imported, so HubSpot's marketing "
        "statuses are not kept: new contacts are non-marketing and no contact's status changes "
        "(keeping them needs the permission contacts.change_marketing_status)."
    ]
    contact_import_commit(contact_import=contact_import, actor=sales, enqueue=False)
    done = contact_import_run(contact_import_id=contact_import.pk)
    assert done.created_count == 5  # Fay's status “Maybe” is not read, so not an error
    assert set(statuses().values()) == {(N, False)}
    assert not StatusChange.objects.exists()

    with pytest.raises(ImportNotAllowed, match="change_marketing_status"):
        contact_import_create(
            file=upload(EXPORT),
            file_name="hs.csv",
            actor=sales,
            mapping={"Marketing contact status": "hubspot_marketing"},
        )
    assert ContactImport.objects.count() == 1


def test_statuses_and_set_all_as_marketing_do_not_mix(account, marketing_ops):
    with pytest.raises(ImportFileError, match="does not apply"):
        contact_import_create(
            file=upload(EXPORT), file_name="hs.csv", actor=marketing_ops, marketing=True
        )
    with pytest.raises(ImportFileError, match="only from a HubSpot export"):
        contact_import_create(
            file=upload("Email,Status\na@b.co,Marketing contact\n"),
            file_name="x.csv",
            mapping={"Status": "hubspot_marketing"},
        )
    assert not ContactImport.objects.exists()


def test_the_format_can_be_chosen(account, marketing_ops):
    text = "E-mail,Marketing contact status\nann@example.com,Marketing contact\n"
    as_csv = contact_import_create(file=upload(text), file_name="a.csv")
    done = bring(text, actor=marketing_ops, file_format="hubspot")

    assert (as_csv.format, as_csv.mapping["Marketing contact status"]) == ("csv", "")
    assert (done.format, done.mapping["Marketing contact status"]) == (
        "hubspot",
        "hubspot_marketing",
    )
    assert statuses() == {"ann@example.com": (M, False)}


# --- the admin and the API ------------------------------------------------------------


def test_admin_upload_preview_shows_the_hubspot_mapping_and_confirm(
    account, dan, ops_client, django_capture_on_commit_callbacks
):
    response = ops_client.post(
        "/admin/contacts/contactimport/add/",
        {"file": upload(EXPORT), "file_format": "hubspot"},
    )
    assert response.status_code == 302, response.content
    contact_import = ContactImport.objects.get()
    mapping_page = ops_client.get(response["Location"]).content.decode()
    assert '<option value="hubspot_marketing" selected>' in mapping_page

    posted = {  # the detected fields, column by column (jsonb keeps no key order)
        f"column_{n}": contact_import.mapping[column]
        for n, column in enumerate(contact_import.columns)
    }
    preview_url = ops_client.post(response["Location"], posted)["Location"]
    html = ops_client.get(preview_url).content.decode()
    assert 'id="import-format">Format: HubSpot export.' in html
    assert "<tr><td>Marketing contact status</td><td>HubSpot marketing status</td></tr>" in html
    assert 'id="preview-marketing"><th scope="row">Become marketing</th><td>3</td>' in html
    assert (
        'id="preview-scheduled"><th scope="row">Downgrades scheduled for the next update '
        "date</th><td>1</td>" in html
    )
    assert 'id="cost-preview"' in html
    assert Contact.objects.count() == 1

    with django_capture_on_commit_callbacks(execute=True):
        confirmed = ops_client.post(preview_url, {})
    assert confirmed.status_code == 302
    assert ContactImport.objects.get().status == "done"
    assert statuses()["cat@example.com"] == (M, True)
    assert_books_balance()


def test_api_upload_with_the_hubspot_format_and_commit(
    account, marketing_ops, sales, django_capture_on_commit_callbacks
):
    api = APIClient()
    api.force_authenticate(marketing_ops)

    response = api.post(
        "/api/imports/", {"file": upload(EXPORT), "format": "hubspot"}, format="multipart"
    )

    assert response.status_code == 201, response.data
    body = response.data
    assert (body["format"], body["preview"]["becomes_marketing"]) == ("hubspot", 3)
    with django_capture_on_commit_callbacks(execute=True):
        committed = api.post(f"/api/imports/{body['id']}/commit/")
    assert committed.status_code == 202
    detail = api.get(f"/api/imports/{body['id']}/").data
    assert (detail["status"], detail["counts"]["created"], detail["counts"]["invalid"]) == (
        "done",
        4,
        4,
    )
    assert statuses()["cat@example.com"] == (M, True)
    assert_books_balance()

    api.force_authenticate(sales)
    refused = api.post(
        "/api/imports/",
        {"file": upload(EXPORT), "mapping": '{"Marketing contact status": "hubspot_marketing"}'},
        format="multipart",
    )
    bad = api.post("/api/imports/", {"file": upload(EXPORT), "format": "excel"}, format="multipart")
    assert refused.status_code == 403
    assert "change_marketing_status" in refused.data["detail"]
    assert bad.status_code == 400 and "format" in bad.data
    assert ContactImport.objects.count() == 1


# --- guardrails, a killed worker, the command --------------------------------------------


class WorkerKilled(BaseException):
    """Stands for kill -9: no `except Exception` sees it."""


def test_past_the_guardrails_the_statuses_wait_for_approval_then_apply_whole(
    account, dan, marketing_ops
):
    set_guardrails(operation_limit=1)
    approver = UserFactory(username="approver", is_superuser=True)

    held = bring(EXPORT, actor=marketing_ops)

    assert held.status == ImportStatus.HELD
    assert set(statuses().values()) == {(N, False)}  # imported, none marketing yet

    billing_approval_approve(approval=PendingApproval.objects.get(), user=approver)
    done = contact_import_sync(contact_import=held)

    assert done.status == ImportStatus.DONE
    assert statuses() == {
        "ann@example.com": (M, False),
        "bob@example.com": (N, False),
        "cat@example.com": (M, True),
        "dan@example.com": (M, False),
    }
    assert done.marketing_result["scheduled"] == 1
    contact_import_sync(contact_import=done)  # read again: nothing more is written
    assert StatusChange.objects.filter(action="downgrade_scheduled").count() == 1
    assert_books_balance()


def test_a_worker_killed_before_the_downgrades_ends_as_one_run_when_resumed(
    account, dan, marketing_ops, settings, monkeypatch
):
    schedule = migration.contacts_set_non_marketing

    def killed(**kwargs):
        raise WorkerKilled

    contact_import = contact_import_create(
        file=upload(EXPORT), file_name="hubspot-contacts.csv", actor=marketing_ops
    )
    contact_import_preview(contact_import=contact_import, actor=marketing_ops)
    contact_import_commit(contact_import=contact_import, actor=marketing_ops, enqueue=False)
    settings.JOB_LEASE_SECONDS = 0
    monkeypatch.setattr(migration, "contacts_set_non_marketing", killed)
    with pytest.raises(WorkerKilled):
        contact_import_run(contact_import_id=contact_import.pk)
    monkeypatch.setattr(migration, "contacts_set_non_marketing", schedule)
    settings.JOB_LEASE_SECONDS = 300
    assert statuses()["cat@example.com"] == (M, False)  # upgraded, its downgrade not yet

    contact_import_resume(contact_import=contact_import, actor=marketing_ops, enqueue=False)
    done = contact_import_run(contact_import_id=contact_import.pk)

    assert (done.status, done.created_count, done.updated_count) == ("done", 3, 1)
    assert statuses()["cat@example.com"] == (M, True)
    assert sorted(StatusChange.objects.values_list("contact__email", "action")) == [
        ("ann@example.com", "upgrade"),
        ("cat@example.com", "downgrade_scheduled"),
        ("cat@example.com", "upgrade"),
        ("dan@example.com", "upgrade"),
    ]
    assert_books_balance()


def test_the_command_imports_a_hubspot_export(account, tmp_path, capsys):
    path = tmp_path / "export.csv"
    path.write_text(EXPORT)

    call_command("import_contacts", str(path), "--source", "HubSpot", "--format", "hubspot")

    out = capsys.readouterr().out
    assert (
        "a HubSpot export, its statuses kept: 2 marketing, 1 set to non-marketing at the next "
        "update (1 downgrades to schedule), 1 non-marketing" in out
    )
    assert statuses()["cat@example.com"] == (M, True)
    assert_books_balance()


def test_a_contact_known_under_a_new_record_id_is_linked_to_it(account, marketing_ops):
    header = (
        "Record ID,Email,Marketing contact status,Marketing contact until next update,Create Date\n"
    )
    bring(header + "7,ann@example.com,Marketing contact,false,1709648520000\n", actor=marketing_ops)

    done = bring(header + "70,ann@example.com,Marketing contact,Yes,\n", actor=marketing_ops)

    record = HubSpotRecord.objects.get()
    assert (record.record_id, record.contact.email) == ("70", "ann@example.com")
    assert record.hubspot_created_at is None  # the new record's row had no date
    # Ann was marketing already: the file's pending downgrade does not take it away.
    assert (done.status, statuses()) == ("done", {"ann@example.com": (M, False)})
    assert_books_balance()


def test_the_until_renewal_column_and_instants_with_offsets(account, marketing_ops):
    header = (
        "Record ID,Email,Marketing contact status,Marketing contact until next update,Create Date\n"
    )

    bring(
        header
        + "1,ann@example.com,true,Yes,2024-03-05T14:22:00+02:00\n"
        + "2,bob@example.com,Marketing contact,,1709648520000\n",
        actor=marketing_ops,
    )

    assert statuses() == {"ann@example.com": (M, True), "bob@example.com": (M, False)}
    created = dict(HubSpotRecord.objects.values_list("record_id", "hubspot_created_at"))
    assert created == {
        "1": dt.datetime(2024, 3, 5, 12, 22, tzinfo=dt.UTC),
        "2": dt.datetime(2024, 3, 5, 14, 22, tzinfo=dt.UTC),
    }
    assert_books_balance()


def test_a_date_without_offset_is_read_in_the_accounts_time_zone(account):
    account.time_zone = "Europe/Stockholm"
    account.save()

    bring("Record ID,Email,Create Date\n1,ann@example.com,2024-03-05 14:22\n")

    assert HubSpotRecord.objects.get().hubspot_created_at == dt.datetime(
        2024, 3, 5, 13, 22, tzinfo=dt.UTC
    )


def test_deleting_a_migrated_contact_deletes_its_record(account, marketing_ops):
    bring(HEADER + "7,Ann,,ann@example.com,,,Marketing contact,Lead,,,,,,\n", actor=marketing_ops)

    contacts_delete(contacts=Contact.objects.all(), actor=marketing_ops)

    assert not HubSpotRecord.objects.exists()
    assert_books_balance()
