"""The CSV export: rows, formula safety, keyset chunks, API, admin and command."""

import csv
import datetime as dt
import io

import pytest
from django.contrib.admin import helpers
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from contacts.imports import export
from contacts.imports.export import (
    EXPORT_HEADER,
    contacts_export_csv,
    contacts_export_rows,
    csv_safe,
)
from contacts.models import Contact
from contacts.status.results import StatusSource
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from tests.factories import ContactFactory, SourceFactory, UserFactory

pytestmark = pytest.mark.usefixtures("account")

SOURCE = StatusSource("manual", name="test")
EXPORT = "/api/contacts/export/"
HEADER = (
    "id,email,first_name,last_name,company,phone,lifecycle_stage,lead_status,contact_type,"
    "unsubscribed,hard_bounced,lead_score,last_engaged_at,source,marketing_status,"
    "non_marketing_from,marketing_reason_type,marketing_reason_id,marketing_reason_name,"
    "created_at"
)


def parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def streamed(response) -> str:
    assert response.streaming
    return b"".join(response.streaming_content).decode()


@pytest.fixture
def people():
    web = SourceFactory(name="Web form", kind="form")
    pending = ContactFactory(
        email="pending@example.com",
        first_name="Ann",
        last_name="Lee",
        company="Acme",
        phone="+46 70 123",
        lifecycle_stage="customer",
        lead_status="open",
        lead_score=-5,
        last_engaged_at=dt.datetime(2026, 3, 4, 5, 6, 7, tzinfo=dt.UTC),
        source=web,
    )
    evil = ContactFactory(
        email="evil@example.com",
        first_name='=HYPERLINK("http://x","y")',
        last_name="@SUM(A1)",
        company="-2+3",
        unsubscribed=True,
        hard_bounced=True,
    )
    plain = ContactFactory(email="plain@example.com", lifecycle_stage="customer")
    contacts_set_marketing(contacts=pending, source=StatusSource("workflow", id=7, name="MQL"))
    result = contacts_set_non_marketing(contacts=pending, source=SOURCE)
    return {"pending": pending, "evil": evil, "plain": plain, "until": result.effective_from}


def test_csv_safe_prefixes_formula_starts_only():
    assert [csv_safe(v) for v in ["=1+2", "+46", "-x", "@a", "\tx", "ok", "a=b", ""]] == [
        "'=1+2",
        "+46",  # a phone number, not a formula
        "'-x",
        "'@a",
        "'\tx",
        "ok",
        "a=b",
        "",
    ]


def test_rows_carry_every_column_the_pending_date_and_safe_cells(people):
    pending, evil = people["pending"], people["evil"]
    pending.refresh_from_db()

    rows = list(contacts_export_rows(contacts=Contact.objects.all()))

    assert rows[0] == EXPORT_HEADER
    assert ",".join(rows[0]) == HEADER
    by_email = {row[1]: row for row in rows[1:]}
    assert by_email["pending@example.com"] == [
        str(pending.pk),
        "pending@example.com",
        "Ann",
        "Lee",
        "Acme",
        "+46 70 123",
        "customer",
        "open",
        "prospect",
        "false",
        "false",
        "-5",
        "2026-03-04T05:06:07+00:00",
        "Web form",
        "marketing",
        people["until"].isoformat(),
        "manual",
        "",
        "test",
        pending.created_at.astimezone(dt.UTC).isoformat(),
    ]
    evil_row = by_email["evil@example.com"]
    assert evil_row[2:5] == ['\'=HYPERLINK("http://x","y")', "'@SUM(A1)", "'-2+3"]
    assert evil_row[9:11] == ["true", "true"]
    assert evil_row[14:16] == ["non_marketing", ""]
    # in id order
    assert [int(row[0]) for row in rows[1:]] == sorted(int(row[0]) for row in rows[1:])
    assert evil.pk in [int(row[0]) for row in rows[1:]]


def test_a_passed_pending_date_reads_non_marketing(people):
    after = people["until"] + dt.timedelta(seconds=1)
    rows = list(
        contacts_export_rows(contacts=Contact.objects.filter(pk=people["pending"].pk), at=after)
    )
    assert rows[1][14:16] == ["non_marketing", ""]


def test_chunks_are_keyset_pages_without_offset(people, monkeypatch):
    # Given 3 + 4 contacts and chunks of 2
    for i in range(4):
        ContactFactory(email=f"more{i}@example.com")
    monkeypatch.setattr(export, "EXPORT_CHUNK_SIZE", 2)

    with CaptureQueriesContext(connection) as queries:
        text = "".join(contacts_export_csv(contacts=Contact.objects.all()))

    rows = parse(text)
    ids = [int(row[0]) for row in rows[1:]]
    assert ids == sorted(Contact.objects.values_list("pk", flat=True))
    # 7 rows in chunks of 2: 4 queries, each "id > last … LIMIT 2", none with OFFSET
    selects = [q["sql"] for q in queries.captured_queries]
    assert len(selects) == 4
    assert all("LIMIT 2" in sql and "OFFSET" not in sql for sql in selects)


# --- API ---


@pytest.fixture
def viewer(db):
    return UserFactory(username="viewer", groups=["Sales"])


def api(user=None):
    client = APIClient()
    if user:
        client.force_authenticate(user)
    return client


def test_api_export_streams_csv_with_the_list_filters(people, viewer):
    response = api(viewer).get(EXPORT, {"lifecycle_stage": "customer"})

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="contacts-')
    rows = parse(streamed(response))
    assert rows[0] == EXPORT_HEADER
    assert [row[1] for row in rows[1:]] == ["pending@example.com", "plain@example.com"]


def test_api_export_filters_by_marketing_status(people, viewer):
    response = api(viewer).get(EXPORT, {"marketing_status": "marketing"}, HTTP_ACCEPT="text/csv")
    assert response.status_code == 200
    assert [row[1] for row in parse(streamed(response))[1:]] == ["pending@example.com"]


def test_api_export_refuses_a_bad_filter(people, viewer):
    response = api(viewer).get(EXPORT, {"lifecycle_stage": "nope"})
    assert response.status_code == 400
    assert "lifecycle_stage" in response.json()


def test_api_export_needs_auth_and_view_permission(people):
    assert api().get(EXPORT).status_code == 401
    nobody = UserFactory(username="nobody")
    response = api(nobody).get(EXPORT)
    assert response.status_code == 403
    assert not response.streaming


# --- admin ---


def test_admin_export_selected(people, client, viewer):
    client.force_login(viewer)
    selected = [people["evil"].pk, people["plain"].pk]

    response = client.post(
        "/admin/contacts/contact/",
        {"action": "export_csv_action", helpers.ACTION_CHECKBOX_NAME: selected},
    )

    assert response.status_code == 200
    assert [int(row[0]) for row in parse(streamed(response))[1:]] == sorted(selected)


def test_admin_export_all_matching_uses_the_changelist_filters(people, client, viewer):
    client.force_login(viewer)
    page = client.get("/admin/contacts/contact/", {"lifecycle_stage": "customer"})
    assert b'id="export-all-link"' in page.content
    assert b"/admin/contacts/contact/export/?lifecycle_stage=customer" in page.content

    response = client.get(
        "/admin/contacts/contact/export/", {"lifecycle_stage": "customer", "q": "pend"}
    )

    assert response.status_code == 200
    assert [row[1] for row in parse(streamed(response))[1:]] == ["pending@example.com"]


def test_admin_export_needs_view_permission(people, client):
    client.force_login(UserFactory(username="staff-without-perms"))
    assert client.get("/admin/contacts/contact/export/").status_code == 403


# --- command ---


def test_command_writes_a_file_with_filters(people, tmp_path):
    path = tmp_path / "out.csv"
    err = io.StringIO()

    call_command(
        "export_contacts", "--output", str(path), "--filter", "lifecycle_stage=customer", stderr=err
    )

    rows = parse(path.read_text())
    assert [row[1] for row in rows[1:]] == ["pending@example.com", "plain@example.com"]
    assert "Wrote 2 contacts" in err.getvalue()


def test_command_writes_stdout_by_default(people):
    out = io.StringIO()
    call_command("export_contacts", stdout=out)
    assert len(parse(out.getvalue())) == 4


@pytest.mark.parametrize("bad", ["lifecycle_stage=nope", "colour=red", "no-equals-sign"])
def test_command_refuses_bad_filters(people, tmp_path, bad):
    path = tmp_path / "out.csv"
    with pytest.raises(CommandError):
        call_command("export_contacts", "--output", str(path), "--filter", bad)
    assert not path.exists()


@pytest.mark.parametrize(
    "value, exported",
    [
        ("+46 70 000 0001", "+46 70 000 0001"),
        ("+1 (555) 010-2030", "+1 (555) 010-2030"),
        ("+SUM(A1:A9)", "'+SUM(A1:A9)"),
        ("+46=HYPERLINK(1)", "'+46=HYPERLINK(1)"),
        ("+ ()", "'+ ()"),  # no digit: not a phone number
        ("-46 70", "'-46 70"),
    ],
)
def test_phone_numbers_are_not_formulas_but_formulas_stay_neutralised(value, exported):
    assert csv_safe(value) == exported


def test_a_phone_number_survives_export_and_import_unchanged(settings, tmp_path):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from contacts.imports.services import (
        contact_import_commit,
        contact_import_create,
        contact_import_preview,
        contact_import_run,
    )

    settings.MEDIA_ROOT = tmp_path
    ContactFactory(email="phone@example.com", phone="+46 70 000 0001")
    exported = "".join(contacts_export_csv(contacts=Contact.objects.all()))
    assert "+46 70 000 0001" in exported and "'+46" not in exported
    Contact.objects.filter(email="phone@example.com").update(phone="")

    upload = SimpleUploadedFile("export.csv", exported.encode(), "text/csv")
    contact_import = contact_import_create(file=upload, file_name="export.csv", actor=None)
    contact_import_preview(contact_import=contact_import, actor=None)
    contact_import_commit(contact_import=contact_import, actor=None, enqueue=False)
    contact_import_run(contact_import_id=contact_import.pk)

    assert Contact.objects.get(email="phone@example.com").phone == "+46 70 000 0001"
