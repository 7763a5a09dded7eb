"""CSV imports: services, background task, API, admin and command.

Every test runs on SQLite and PostgreSQL; on PostgreSQL the COPY / ON CONFLICT fast path
runs, and `test_fast_path_and_portable_path_agree` runs both paths on the same files.
"""

import csv
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from billing.guardrails import billing_approval_approve
from billing.models import Subscription
from contacts.imports import parsing, services, staging
from contacts.imports.models import (
    ContactImport,
    ImportRowError,
    ImportStatus,
)
from contacts.imports.parsing import (
    ImportFileError,
    ImportNotAllowed,
)
from contacts.imports.services import (
    contact_import_commit,
    contact_import_configure,
    contact_import_create,
    contact_import_preview,
    contact_import_run,
)
from contacts.models import (
    Contact,
    Source,
)
from contacts.status.models import (
    PendingApproval,
    StatusChange,
    StatusChangeRequest,
)
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from contacts.tasks import run_contact_import
from tests.factories import ContactFactory, SourceFactory, UserFactory, set_guardrails

M, N = "marketing", "non_marketing"
IMPORTS = "/api/imports/"


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def upload(text: str, name: str = "contacts.csv", *, bom: bool = False) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, (("\ufeff" if bom else "") + text).encode(), "text/csv")


def run_import(text: str, *, marketing=False, mapping=None, actor=None, name="contacts.csv"):
    """Upload, preview, commit and run, as the command does; returns the finished import."""
    contact_import = contact_import_create(
        file=upload(text, name), file_name=name, actor=actor, marketing=marketing, mapping=mapping
    )
    contact_import_preview(contact_import=contact_import, actor=actor)
    contact_import_commit(contact_import=contact_import, actor=actor, enqueue=False)
    return contact_import_run(contact_import_id=contact_import.pk)


def contacts_table():
    return list(
        Contact.objects.order_by("email").values_list(
            "email",
            "first_name",
            "last_name",
            "company",
            "phone",
            "lifecycle_stage",
            "lead_status",
            "contact_type",
            "unsubscribed",
            "hard_bounced",
            "marketing_status",
            "marketing_until",
            "source__name",
        )
    )


def errors_of(contact_import):
    return list(
        ImportRowError.objects.filter(contact_import=contact_import)
        .order_by("line", "id")
        .values_list("line", "column", "message")
    )


# --- reading the file ---------------------------------------------------------------


def test_bad_rows_are_reported_with_line_and_column_while_good_rows_land(account):
    text = (
        "Email,First Name,Lifecycle Stage\n"
        "ann@example.com,Ann,lead\n"
        "not-an-email,Bob,lead\n"
        "cat@example.com,Cat,champion\n"
        "\n"
        ",Dan,lead\n"
        "eve@example.com,Eve,Customer\n"
    )

    done = run_import(text)

    assert (done.status, done.rows, done.created_count, done.invalid_count) == ("done", 5, 2, 3)
    assert list(Contact.objects.order_by("email").values_list("email", "lifecycle_stage")) == [
        ("ann@example.com", "lead"),
        ("eve@example.com", "customer"),
    ]
    assert errors_of(done) == [
        (3, "Email", "“not-an-email” is not a valid email address."),
        (
            4,
            "Lifecycle Stage",
            "“champion” is not a lifecycle stage (subscriber, lead, mql, sql, opportunity, "
            "customer, evangelist, other).",
        ),
        (6, "Email", "The email is empty: every row needs one."),
    ]


def test_a_duplicate_email_in_the_file_is_reported_and_the_last_row_wins(account):
    text = (
        "Email,First Name,Company\n"
        "ann@example.com,Ann,Acme\n"
        "bob@example.com,Bob,Bobco\n"
        " ANN@example.com ,Annie,\n"
    )

    done = run_import(text)

    assert (done.created_count, done.duplicate_count, done.invalid_count) == (2, 1, 0)
    ann = Contact.objects.get(email="ann@example.com")
    # The last row is imported as it is: its empty company stays empty on a new contact.
    assert (ann.first_name, ann.company) == ("Annie", "")
    assert errors_of(done) == [
        (
            2,
            "Email",
            "Duplicate: ann@example.com is also on line 4, the last row with this email, "
            "which is imported instead.",
        )
    ]


def test_bom_semicolons_quotes_and_hubspot_headers(account):
    text = (
        "First Name;E-mail Address;Lifecycle Stage;Lead Status;Company Name;Record ID\n"
        'Ann;ann@example.com;Marketing Qualified Lead;IN_PROGRESS;"Acme; Inc.";1\n'
        'Bob;bob@example.com;salesqualifiedlead;Open Deal;"Multi\nline";2\n'
        "Cat;bad;lead;;x;3\n"
    )
    contact_import = contact_import_create(file=upload(text, bom=True), file_name="hs.csv")

    assert contact_import.delimiter == ";"
    assert contact_import.columns[0] == "First Name"  # no BOM left in the header
    assert contact_import.mapping == {
        "First Name": "first_name",
        "E-mail Address": "email",
        "Lifecycle Stage": "lifecycle_stage",
        "Lead Status": "lead_status",
        "Company Name": "company",
        "Record ID": "",
    }
    contact_import_preview(contact_import=contact_import)
    contact_import_commit(contact_import=contact_import, enqueue=False)
    done = contact_import_run(contact_import_id=contact_import.pk)

    assert list(
        Contact.objects.order_by("email").values_list(
            "email", "lifecycle_stage", "lead_status", "company"
        )
    ) == [
        ("ann@example.com", "mql", "in_progress", "Acme; Inc."),
        ("bob@example.com", "sql", "open_deal", "Multi\nline"),
    ]
    # The bad row starts on line 5: the quoted field of line 3 spans two lines.
    assert errors_of(done) == [(5, "E-mail Address", "“bad” is not a valid email address.")]


def test_a_mapping_overrides_the_detected_columns(account):
    text = "Email,Work email,Type,Notes\nold@example.com,new@example.com,partner,hello\n"

    done = run_import(text, mapping={"Work email": "email", "Notes": "company"})

    assert done.mapping == {
        "Email": "",
        "Work email": "email",
        "Type": "contact_type",
        "Notes": "company",
    }
    assert contacts_table()[0][:4] == ("new@example.com", "", "", "hello")
    assert Contact.objects.get().contact_type == "partner"


@pytest.mark.parametrize(
    ("text", "mapping", "message"),
    [
        ("Name,Company\nAnn,Acme\n", None, "No column is mapped to email"),
        ("Email,Email\na@b.co,c@d.co\n", None, "names the column “Email” twice"),
        ("Email\na@b.co\n", {"Mail": "email"}, "There is no column “Mail”"),
        ("Email,X\na@b.co,1\n", {"X": "lead_score"}, "“lead_score” \\(for the column “X”\\)"),
        (
            "Email,X\na@b.co,1\n",
            {"X": "email", "Email": "email"},
            "The field email is mapped from more than one",
        ),
        ("", None, "The file is empty"),
    ],
)
def test_bad_files_and_mappings_are_refused_and_nothing_is_stored(account, text, mapping, message):
    with pytest.raises(ImportFileError, match=message):
        contact_import_create(file=upload(text), file_name="x.csv", mapping=mapping)

    assert not ContactImport.objects.exists()


def test_a_file_that_is_not_utf8_is_refused(account):
    with pytest.raises(ImportFileError, match="not UTF-8"):
        contact_import_create(
            file=SimpleUploadedFile("x.csv", "Email,Name\nå@example.com,Åsa\n".encode("latin-1")),
            file_name="x.csv",
        )
    assert not ContactImport.objects.exists()


def test_the_size_limit(account, settings):
    settings.IMPORT_MAX_BYTES = 20

    with pytest.raises(ImportFileError, match=r"at most 0\.0 MB \(setting IMPORT_MAX_BYTES\)"):
        contact_import_create(
            file=upload("Email\nann@example.com\nbob@example.com\n"), file_name="x.csv"
        )
    assert not ContactImport.objects.exists()


# --- upserting ------------------------------------------------------------------------


def test_existing_contacts_get_only_the_non_empty_values(account):
    ContactFactory(
        email="ann@example.com",
        first_name="Ann",
        last_name="Old",
        company="Acme",
        phone="123",
        lifecycle_stage="customer",
    )
    text = "Email,First Name,Last Name,Company,Lifecycle Stage\nANN@example.com,,New,,\n"

    done = run_import(text)

    assert (done.created_count, done.updated_count, done.unchanged_count) == (0, 1, 0)
    ann = Contact.objects.get()
    assert (ann.first_name, ann.last_name, ann.company, ann.phone, ann.lifecycle_stage) == (
        "Ann",
        "New",
        "Acme",
        "123",
        "customer",
    )


def test_flags_are_only_ever_set(account):
    ContactFactory(email="ann@example.com", unsubscribed=True)
    ContactFactory(email="bob@example.com")
    text = "Email,Unsubscribed,Hard bounced\nann@example.com,no,\nbob@example.com,yes,TRUE\n"

    done = run_import(text)

    assert done.updated_count == 1  # Bob; Ann's "no" does not clear her unsubscribe
    assert list(
        Contact.objects.order_by("email").values_list("email", "unsubscribed", "hard_bounced")
    ) == [("ann@example.com", True, False), ("bob@example.com", True, True)]


def test_reimporting_the_same_file_changes_nothing(account):
    text = "Email,First Name,Lifecycle Stage\nann@example.com,Ann,mql\nbob@example.com,Bob,\n"
    run_import(text, marketing=True)
    before = list(Contact.objects.order_by("id").values_list("id", "updated_at"))
    ledger = StatusChange.objects.count()
    requests = StatusChangeRequest.objects.count()

    again = run_import(text, marketing=True)

    assert (again.created_count, again.updated_count, again.unchanged_count) == (0, 0, 2)
    assert again.marketing_count == 0
    assert again.preview["same_file"] == [again.pk - 1]
    assert list(Contact.objects.order_by("id").values_list("id", "updated_at")) == before
    assert (StatusChange.objects.count(), StatusChangeRequest.objects.count()) == (ledger, requests)


def test_running_the_same_import_twice_changes_nothing_more(account):
    contact_import = contact_import_create(
        file=upload("Email\nann@example.com\n"), file_name="x.csv", marketing=True
    )
    contact_import_preview(contact_import=contact_import)
    contact_import_commit(contact_import=contact_import, enqueue=False)
    contact_import_run(contact_import_id=contact_import.pk)
    ContactImport.objects.filter(pk=contact_import.pk).update(status=ImportStatus.RUNNING)

    rerun = contact_import_run(contact_import_id=contact_import.pk)  # a redelivered task

    assert (rerun.status, rerun.created_count, rerun.unchanged_count) == ("done", 0, 1)
    assert StatusChange.objects.count() == 1
    assert rerun.marketing_count == 1  # the stored result of the first run, replayed


# --- marketing status ----------------------------------------------------------------


@pytest.fixture
def people(account, manual):
    """A marketing contact, one marketing with a pending downgrade, one non-marketing."""
    marketing = ContactFactory(email="m@example.com")
    pending = ContactFactory(email="p@example.com")
    plain = ContactFactory(email="n@example.com")
    contacts_set_marketing(contacts=[marketing.pk, pending.pk], source=manual)
    contacts_set_non_marketing(contacts=pending, source=manual)
    return marketing, pending, plain


FILE_OF_PEOPLE = (
    "Email,First Name\nm@example.com,Em\np@example.com,Pe\nn@example.com,En\nnew@example.com,Nu\n"
)


def statuses():
    return {
        c.email: (c.marketing_status, c.marketing_until is not None) for c in Contact.objects.all()
    }


def test_an_ordinary_import_never_changes_a_status(people):
    ledger = StatusChange.objects.count()

    done = run_import(FILE_OF_PEOPLE)

    assert statuses() == {
        "m@example.com": (M, False),
        "p@example.com": (M, True),  # still pending: not downgraded now, not cancelled
        "n@example.com": (N, False),
        "new@example.com": (N, False),
    }
    assert (done.updated_count, done.created_count, done.marketing_count) == (3, 1, 0)
    assert StatusChange.objects.count() == ledger
    assert Contact.objects.get(email="new@example.com").source.name == "CSV import"


def test_a_marketing_import_upgrades_and_never_downgrades(people):
    marketing, pending, plain = people
    ledger = StatusChange.objects.count()

    done = run_import(FILE_OF_PEOPLE, marketing=True)

    assert statuses() == {
        "m@example.com": (M, False),
        "p@example.com": (M, False),  # the pending downgrade is cancelled
        "n@example.com": (M, False),
        "new@example.com": (M, False),
    }
    assert done.marketing_count == 3
    rows = StatusChange.objects.filter(pk__gt=0).order_by("id")[ledger:]
    assert sorted(
        (row.contact.email, row.action, row.source_type, row.source_id, row.source_name)
        for row in rows
    ) == [
        ("n@example.com", "upgrade", "import", str(done.pk), "contacts.csv"),
        ("new@example.com", "upgrade", "import", str(done.pk), "contacts.csv"),
        ("p@example.com", "downgrade_cancelled", "import", str(done.pk), "contacts.csv"),
    ]
    assert (
        StatusChangeRequest.objects.filter(idempotency_key=f"import:{done.pk}:marketing").count()
        == 1
    )


def reasons():
    return {
        c.email: (c.marketing_reason_type, c.marketing_reason_id, c.marketing_reason_name)
        for c in Contact.objects.all()
    }


@pytest.mark.parametrize("portable", [False, True], ids=["fast", "portable"])
@pytest.mark.parametrize("marketing", [False, True], ids=["ordinary", "marketing"])
def test_new_contacts_record_the_import_as_their_reason(people, monkeypatch, marketing, portable):
    # On PostgreSQL "fast" is the COPY / ON CONFLICT path; elsewhere both run the portable one.
    monkeypatch.setattr(staging, "FORCE_PORTABLE", portable)
    before = reasons()
    assert before["m@example.com"][0] == "manual"

    done = run_import(FILE_OF_PEOPLE, marketing=marketing, name="spring leads.csv")

    import_reason = ("import", str(done.pk), "spring leads.csv")
    assert reasons()["new@example.com"] == import_reason
    assert statuses()["new@example.com"] == ((M if marketing else N), False)
    # The policy decides it: the same reason as `contacts_creation_policy` gives the import.
    decision = services.import_creation_decision(done)
    assert decision.marketing is marketing
    assert (decision.status_source.type, decision.status_source.id) == import_reason[:2]
    # Existing contacts the import updated keep their reason, unless a marketing import
    # changed their status (the ledger row and the reason then name the import).
    assert done.updated_count == 3
    assert reasons()["m@example.com"] == before["m@example.com"]
    for email in ("n@example.com", "p@example.com"):
        assert reasons()[email] == (import_reason if marketing else before[email])


def test_the_preview_counts_what_becomes_marketing_with_its_cost(people):
    subscription = Subscription.load()
    subscription.included_contacts, subscription.block_size = 2, 1
    subscription.base_price, subscription.block_price = 1_000, 100
    subscription.save()
    contact_import = contact_import_create(
        file=upload(FILE_OF_PEOPLE + "bad\n"), file_name="x.csv", marketing=True
    )

    preview = contact_import_preview(contact_import=contact_import).preview

    assert {k: preview[k] for k in ("rows", "new", "updated", "unchanged", "invalid")} == {
        "rows": 5,
        "new": 1,
        "updated": 3,
        "unchanged": 0,
        "invalid": 1,
    }
    assert (preview["becomes_marketing"], preview["already_marketing"]) == (3, 1)
    status = preview["status_preview"]
    assert (status["would_change"], status["would_cancel"], status["live_after"]) == (2, 1, 4)
    cost = status["extra"]["cost"]
    assert (cost["would_add"], cost["peak_after"], cost["invoice_delta"]) == (2, 4, 200)
    assert not Contact.objects.filter(email="new@example.com").exists()  # nothing written


def test_a_marketing_import_past_the_guardrails_lands_non_marketing_and_waits(people):
    set_guardrails(operation_limit=1)
    approver = UserFactory(username="approver", is_superuser=True)

    done = run_import(FILE_OF_PEOPLE, marketing=True)

    assert done.status == ImportStatus.HELD
    assert done.message.startswith(
        "The contacts were imported as non-marketing; setting them as marketing is held. "
    )
    assert "Waiting for approval #" in done.message
    assert statuses()["new@example.com"] == (N, False)
    assert statuses()["p@example.com"] == (M, True)
    # Held, the new contacts are non-marketing, and say why: the import created them.
    new = Contact.objects.get(email="new@example.com")
    assert (new.marketing_reason_type, new.marketing_reason_id) == ("import", str(done.pk))
    approval = PendingApproval.objects.get()
    assert (approval.source_type, approval.source_id) == ("import", str(done.pk))

    billing_approval_approve(approval=approval, user=approver)
    done = services.contact_import_sync(contact_import=done)

    assert done.status == ImportStatus.DONE
    assert done.marketing_count == 3
    assert statuses()["new@example.com"] == (M, False)


def test_a_marketing_import_needs_the_permission(account, sales):
    with pytest.raises(ImportNotAllowed, match="contacts.change_marketing_status"):
        contact_import_create(
            file=upload("Email\nann@example.com\n"), file_name="x.csv", actor=sales, marketing=True
        )
    contact_import = contact_import_create(
        file=upload("Email\nann@example.com\n"), file_name="x.csv", actor=sales
    )
    with pytest.raises(ImportNotAllowed):
        contact_import_configure(
            contact_import=contact_import, mapping=None, marketing=True, actor=sales
        )
    assert not Contact.objects.exists()
    assert ContactImport.objects.get().marketing is False


# --- the background job -----------------------------------------------------------------


def test_the_commit_queues_the_task_once_and_the_task_runs_it(
    account, marketing_ops, django_capture_on_commit_callbacks
):
    contact_import = contact_import_create(
        file=upload("Email\nann@example.com\n"), file_name="x.csv", actor=marketing_ops
    )
    contact_import_preview(contact_import=contact_import)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        queued = contact_import_commit(contact_import=contact_import, actor=marketing_ops)
        again = contact_import_commit(contact_import=contact_import, actor=marketing_ops)

    assert (queued.status, again.status, len(callbacks)) == ("queued", "queued", 1)
    assert not Contact.objects.exists()
    result = run_contact_import.delay(contact_import.pk).get()
    assert result == {"id": contact_import.pk, "status": "done"}
    assert run_contact_import.delay(contact_import.pk).get()["status"] == "done"  # no-op
    assert Contact.objects.get().email == "ann@example.com"
    contact_import.refresh_from_db()
    assert (contact_import.processed_rows, contact_import.total_rows) == (1, 1)
    assert contact_import.committed_by == marketing_ops


def test_a_commit_before_the_preview_is_refused(account):
    contact_import = contact_import_create(file=upload("Email\na@b.co\n"), file_name="x.csv")
    with pytest.raises(parsing.ImportStateError, match="Preview the import"):
        contact_import_commit(contact_import=contact_import, enqueue=False)


def test_progress_is_reported_by_phase(account, monkeypatch):
    monkeypatch.setattr(staging, "IMPORT_STAGE_BATCH", 2)
    monkeypatch.setattr(services, "IMPORT_PORTABLE_BATCH", 2)
    monkeypatch.setattr(services, "IMPORT_UPSERT_BATCH", 2)
    text = "Email\n" + "".join(f"p{i}@example.com\n" for i in range(5))
    contact_import = contact_import_create(file=upload(text), file_name="x.csv")
    contact_import_preview(contact_import=contact_import)
    contact_import_commit(contact_import=contact_import, enqueue=False)
    seen = []

    contact_import_run(
        contact_import_id=contact_import.pk, progress=lambda *step: seen.append(step)
    )

    # PostgreSQL reads the rows its preview staged, at once; elsewhere the file, in batches
    reading = (
        [("reading", 5, 5)]
        if connection.vendor == "postgresql"
        else [("reading", 2, 5), ("reading", 4, 5), ("reading", 5, 5)]
    )
    assert seen == [
        *reading,
        ("saving", 0, 5),
        ("saving", 2, 5),
        ("saving", 4, 5),
        ("saving", 5, 5),
    ]


# --- the fast path and the portable path ------------------------------------------------


@pytest.mark.postgres
def test_fast_path_and_portable_path_agree(account, monkeypatch, manual):
    existing = "Email,First Name,Company,Lifecycle Stage,Unsubscribed\n" + "".join(
        f"p{i}@example.com,Old{i},Co{i},lead,\n" for i in range(0, 40, 2)
    )
    text = (
        "email;firstname;Company;Lifecycle Stage;Unsubscribed;Phone\n"
        + "".join(
            f"P{i}@Example.com;{'New' if i % 3 else ''}{i};{'' if i % 4 else 'Z'};"
            f"{['', 'mql', 'lead', 'bad'][i % 4]};{'yes' if i % 5 == 0 else ''};{i}\n"
            for i in range(40)
        )
        + "p7@example.com;Last;;;;\n"
    )

    results = []
    for portable in (False, True):
        monkeypatch.setattr(staging, "FORCE_PORTABLE", portable)
        Contact.objects.all().delete()
        run_import(existing)
        contacts_set_marketing(
            contacts=Contact.objects.filter(email="p4@example.com"), source=manual
        )
        done = run_import(text, marketing=True)
        table = [row[:-3] + row[-1:] for row in contacts_table()]  # without the pending date
        counts = (
            done.rows,
            done.created_count,
            done.updated_count,
            done.unchanged_count,
            done.invalid_count,
            done.duplicate_count,
            done.marketing_count,
            done.preview["new"],
            done.preview["updated"],
            done.preview["unchanged"],
        )
        results.append((counts, table, errors_of(done)))

    assert results[0] == results[1]
    # p7 is invalid on line 9, so its last row is not a duplicate; p4 was marketing already.
    assert results[0][0] == (41, 11, 20, 0, 10, 0, 30, 11, 20, 0)


# --- the API --------------------------------------------------------------------------


def client_for(user):
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_api_upload_preview_commit_progress_and_errors(
    account, marketing_ops, django_capture_on_commit_callbacks
):
    api = client_for(marketing_ops)

    response = api.post(
        IMPORTS,
        {
            "file": upload("Mail,Name\nann@example.com,Ann\nbad,Bob\n"),
            "mapping": '{"Name": "first_name"}',
            "marketing": "true",
        },
        format="multipart",
    )

    assert response.status_code == 201, response.data
    body = response.data
    assert (body["status"], body["mapping"]) == (
        "previewed",
        {"Mail": "email", "Name": "first_name"},
    )
    assert {k: body["preview"][k] for k in ("rows", "new", "invalid", "becomes_marketing")} == {
        "rows": 2,
        "new": 1,
        "invalid": 1,
        "becomes_marketing": 1,
    }
    assert "cost" in body["preview"]["status_preview"]["extra"]
    assert not Contact.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        committed = api.post(f"{IMPORTS}{body['id']}/commit/")
    assert committed.status_code == 202
    again = api.post(f"{IMPORTS}{body['id']}/commit/")
    assert (again.status_code, again.data["status"]) == (202, "done")

    detail = api.get(f"{IMPORTS}{body['id']}/").data
    assert detail["status"] == "done"
    assert detail["progress"] == {"processed_rows": 1, "total_rows": 1, "percent": 100}
    assert detail["counts"] == {
        "rows": 2,
        "imported": 1,
        "reported": 1,
        "created": 1,
        "updated": 0,
        "unchanged": 0,
        "invalid": 1,
        "duplicates": 0,
        "marketing": 1,
    }
    assert Contact.objects.get().marketing_status == M

    errors = api.get(f"{IMPORTS}{body['id']}/errors/")
    assert errors.status_code == 200
    assert errors["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(errors.streaming_content).decode())))
    assert rows == [
        ["line", "column", "message"],
        ["3", "Mail", "“bad” is not a valid email address."],
    ]


def test_api_marketing_import_without_the_permission_is_403_and_writes_nothing(account, sales):
    api = client_for(sales)

    response = api.post(
        IMPORTS, {"file": upload("Email\nann@example.com\n"), "marketing": True}, format="multipart"
    )

    assert response.status_code == 403
    assert "contacts.change_marketing_status" in response.data["detail"]
    assert not ContactImport.objects.exists()
    assert not Contact.objects.exists()


def test_api_needs_the_import_permission(account, auditor_client):
    api = client_for(UserFactory(username="nobody"))
    assert (
        api.post(IMPORTS, {"file": upload("Email\na@b.co\n")}, format="multipart").status_code
        == 403
    )
    assert api.get(IMPORTS).status_code == 403
    assert APIClient().get(IMPORTS).status_code == 401


def test_api_bad_input_is_400_with_a_message(account, marketing_ops, settings):
    api = client_for(marketing_ops)

    no_email = api.post(IMPORTS, {"file": upload("Name\nAnn\n")}, format="multipart")
    bad_mapping = api.post(
        IMPORTS, {"file": upload("Email\na@b.co\n"), "mapping": "{oops"}, format="multipart"
    )
    settings.IMPORT_MAX_BYTES = 5
    too_big = api.post(IMPORTS, {"file": upload("Email\na@b.co\n")}, format="multipart")

    assert no_email.status_code == 400
    assert "No column is mapped to email" in no_email.data["detail"]
    assert bad_mapping.status_code == 400 and "mapping" in bad_mapping.data
    assert too_big.status_code == 400 and "IMPORT_MAX_BYTES" in too_big.data["file"][0]
    assert not ContactImport.objects.exists()


def test_api_a_file_broken_midway_is_400_and_kept_nowhere(account, marketing_ops):
    api = client_for(marketing_ops)
    data = b"Email\n" + b"a@b.co\n" * 10 + "\u00e5@example.com\n".encode("latin-1")

    response = api.post(IMPORTS, {"file": SimpleUploadedFile("x.csv", data)}, format="multipart")

    assert response.status_code == 400
    assert "not UTF-8" in response.data["detail"]
    assert not ContactImport.objects.exists()


# --- the admin ------------------------------------------------------------------------


def test_admin_upload_mapping_preview_confirm_and_progress(
    account, ops_client, django_capture_on_commit_callbacks
):
    text = "E-mail,Surname,Extra\nann@example.com,Smith,x\nbad,Jones,y\n"

    response = ops_client.post(
        "/admin/contacts/contactimport/add/", {"file": upload(text)}, follow=False
    )
    assert response.status_code == 302, response.content
    contact_import = ContactImport.objects.get()
    mapping_url = f"/admin/contacts/contactimport/{contact_import.pk}/mapping/"
    assert response["Location"] == mapping_url

    page = ops_client.get(mapping_url)
    assert page.status_code == 200
    assert '<option value="email" selected>' in page.content.decode()

    response = ops_client.post(
        mapping_url,
        {"column_0": "email", "column_1": "last_name", "column_2": "company", "marketing": "on"},
    )
    assert response.status_code == 302
    preview = ops_client.get(response["Location"])
    html = preview.content.decode()
    assert preview.status_code == 200
    assert 'id="preview-new"><th scope="row">New contacts</th><td>1</td>' in html
    assert (
        'id="preview-invalid"><th scope="row">Rows with errors (not imported)</th><td>1</td>'
        in html
    )
    assert 'id="preview-marketing"><th scope="row">Become marketing</th><td>1</td>' in html
    assert 'id="cost-preview"' in html  # billing's money, through the preview's extra
    assert not Contact.objects.exists()

    with django_capture_on_commit_callbacks(execute=True):
        confirmed = ops_client.post(response["Location"], {})
    assert confirmed.status_code == 302
    page = ops_client.get(confirmed["Location"])
    assert page.status_code == 200
    assert 'id="import-bar" max="100" value="100"' in page.content.decode()
    assert ops_client.get(
        f"/admin/contacts/contactimport/{contact_import.pk}/progress/"
    ).json() == {
        "status": "done",
        "status_display": "Done",
        "phase": "",
        "phase_display": "",
        "processed_rows": 1,
        "total_rows": 1,
        "percent": 100,
        "finished": True,
    }
    errors = ops_client.get(f"/admin/contacts/contactimport/{contact_import.pk}/errors.csv")
    assert b"".join(errors.streaming_content).decode().splitlines()[1] == (
        "3,E-mail,“bad” is not a valid email address."
    )
    ann = Contact.objects.get()
    assert (ann.last_name, ann.company, ann.marketing_status) == ("Smith", "x", M)


def test_admin_hides_marketing_without_the_permission_and_refuses_a_forged_one(
    account, sales_client, sales
):
    page = sales_client.get("/admin/contacts/contactimport/add/")
    assert page.status_code == 200
    assert 'name="marketing"' not in page.content.decode()

    response = sales_client.post(
        "/admin/contacts/contactimport/add/", {"file": upload("Email\na@b.co\n"), "marketing": "on"}
    )

    # Refused with a form error, not quietly imported as non-marketing: nothing is stored
    assert response.status_code == 200
    assert "needs the permission contacts.change_marketing_status" in response.content.decode()
    assert ContactImport.objects.count() == 0


def test_admin_upload_over_the_limit_says_so(account, ops_client, settings):
    settings.IMPORT_MAX_BYTES = 5
    page = ops_client.post(
        "/admin/contacts/contactimport/add/", {"file": upload("Email\na@b.co\n")}
    )
    assert page.status_code == 200
    assert "IMPORT_MAX_BYTES" in page.content.decode()
    assert not ContactImport.objects.exists()


# --- the command ------------------------------------------------------------------------


def test_command_imports_with_a_map_and_prints_the_preview(account, tmp_path, capsys):
    path = tmp_path / "people.csv"
    path.write_text("Mail;Given;Org\nann@example.com;Ann;Acme\nbad;Bob;B\n", encoding="utf-8-sig")

    call_command(
        "import_contacts",
        str(path),
        "--source",
        "Fair 2026",
        "--map",
        "Given=first_name",
        "--map",
        "Org=company",
    )

    out = capsys.readouterr().out
    assert "rows 2: new 1, updated 0, unchanged 0, invalid 1, duplicates 0" in out
    assert "1 created, 0 updated, 0 unchanged, 1 invalid" in out
    ann = Contact.objects.get()
    assert (ann.first_name, ann.company, ann.source.name, ann.source.kind) == (
        "Ann",
        "Acme",
        "Fair 2026",
        "import",
    )


def test_command_dry_run_keeps_nothing(account, tmp_path, capsys):
    path = tmp_path / "people.csv"
    path.write_text("Email\nann@example.com\n")

    call_command("import_contacts", str(path), "--source", "CSV import", "--dry-run")

    assert "Dry run: nothing was imported." in capsys.readouterr().out
    assert (Contact.objects.count(), ContactImport.objects.count()) == (0, 0)


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, [], "There is no file"),
        ("Name\nAnn\n", [], "No column is mapped to email"),
        ("Email\na@b.co\n", ["--map", "nope"], 'takes "Column=field"'),
        (
            "Email\na@b.co\n",
            ["--map", "Email=shoe_size"],
            "“shoe_size” \\(for the column “Email”\\)",
        ),
        ("Email\na@b.co\n", ["--user", "sales", "--marketing"], "contacts.change_marketing_status"),
    ],
)
def test_command_bad_input_exits_with_a_sentence(account, sales, tmp_path, content, args, message):
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("import_contacts", str(path), "--source", "CSV import", *args)
    assert not Contact.objects.exists()


def test_command_refuses_a_source_of_another_kind(account, tmp_path):
    SourceFactory(name="Website form", kind="form")
    path = tmp_path / "in.csv"
    path.write_text("Email\na@b.co\n")
    with pytest.raises(CommandError, match="is a Form source"):
        call_command("import_contacts", str(path), "--source", "Website form")
    assert Source.objects.filter(kind="import").count() == 0


def test_command_size_limit(account, tmp_path, settings):
    settings.IMPORT_MAX_BYTES = 3
    path = tmp_path / "in.csv"
    path.write_text("Email\na@b.co\n")
    with pytest.raises(CommandError, match="IMPORT_MAX_BYTES"):
        call_command("import_contacts", str(path), "--source", "CSV import")
    assert timezone.now()  # nothing else to check: nothing was stored
    assert not ContactImport.objects.exists()


def test_the_contacts_an_import_created_or_updated_are_told_to_the_listeners(
    account, django_capture_on_commit_callbacks
):
    from contacts.hooks import register_contact_listener, unregister_contact_listener

    # Given an existing contact the file updates, one it leaves as it is, and one not in it
    source = Source.objects.create(name="Existing", kind="manual")
    changed = Contact.objects.create(email="old@example.com", first_name="Old", source=source)
    same = Contact.objects.create(email="same@example.com", first_name="Same", source=source)
    Contact.objects.create(email="elsewhere@example.com", source=source)
    told: list[int] = []
    listener = told.extend
    register_contact_listener(listener)
    try:
        # When a file with a new contact, the update and the unchanged row is imported
        with django_capture_on_commit_callbacks(execute=True):
            run_import(
                "Email,First Name\nnew@example.com,New\nold@example.com,Renamed\nsame@example.com,Same\n"
            )
    finally:
        unregister_contact_listener(listener)

    # Then the listeners hear of the new and the updated contact only
    new = Contact.objects.get(email="new@example.com")
    assert sorted(told) == sorted([new.pk, changed.pk])
    assert same.pk not in told


def test_an_import_gathers_no_ids_while_no_listener_listens(
    account, django_capture_on_commit_callbacks
):
    from contacts.hooks import (
        has_contact_listeners,
        register_contact_listener,
        unregister_contact_listener,
    )
    from workflows.models import Workflow

    # Given only listeners that say they do not listen now (workflows' listens while an
    # event-triggered workflow is enabled, and none is)
    assert not Workflow.objects.filter(enabled=True, event_triggered=True).exists()
    told: list[int] = []
    listener = told.extend
    register_contact_listener(listener, listening=lambda: False)
    try:
        assert not has_contact_listeners()
        # When a file of new contacts is imported
        with (
            django_capture_on_commit_callbacks(execute=True),
            CaptureQueriesContext(connection) as queries,
        ):
            run_import("Email,First Name\na@example.com,A\nb@example.com,B\n")
    finally:
        unregister_contact_listener(listener)

    # Then the contacts are stored, and no one was told, nor their ids read for it
    assert Contact.objects.filter(email__in=["a@example.com", "b@example.com"]).count() == 2
    assert told == []
    assert not [q for q in queries if '"contacts_contact"."updated_at" >=' in q["sql"]]
