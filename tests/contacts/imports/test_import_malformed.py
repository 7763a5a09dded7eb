"""CSV imports account for every line: rows read = rows imported + rows reported.

A malformed quote (one that runs to the end of the file, or one closed so late that
lines inside it read as rows of their own) and a NUL character are row errors naming
their lines; the other rows import. Through the command, the API and the admin; on
PostgreSQL through the COPY path and the portable one.
"""

import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from rest_framework.test import APIClient

from contacts.imports import staging
from contacts.imports.models import ContactImport, ImportRowError
from contacts.models import Contact

IMPORTS = "/api/imports/"
UNCLOSED = 'email,first_name\nq1@example.com,"Open\nq2@example.com,Two\n'


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(params=[False, True], ids=["fast", "portable"])
def path(request, monkeypatch):
    """Both staging paths (on SQLite they are the same one)."""
    monkeypatch.setattr(staging, "FORCE_PORTABLE", request.param)
    return request.param


def import_file(tmp_path, text: str) -> tuple[ContactImport, str]:
    """`manage.py import_contacts` on `text`; the import and what the command printed."""
    csv_path = tmp_path / "contacts.csv"
    csv_path.write_text(text, encoding="utf-8")
    out = io.StringIO()
    call_command("import_contacts", str(csv_path), "--source", "Fair", stdout=out)
    return ContactImport.objects.get(), out.getvalue()


def errors_of(contact_import) -> list[tuple]:
    return list(
        ImportRowError.objects.filter(contact_import=contact_import)
        .order_by("line", "id")
        .values_list("line", "column", "message")
    )


def accounting(contact_import) -> tuple[int, int, int]:
    return contact_import.rows, contact_import.imported_count, contact_import.reported_count


def emails() -> list[str]:
    return sorted(Contact.objects.values_list("email", flat=True))


def test_a_quote_left_open_to_the_end_of_the_file_is_a_row_error_naming_its_lines(
    account, tmp_path, path
):
    done, out = import_file(tmp_path, UNCLOSED)

    assert done.status == "done"
    assert errors_of(done) == [
        (
            2,
            "",
            "A quote opened in the row on line 2 is never closed: lines 2–3 (to the end of "
            "the file) were read as one value, so none of them was imported. Close the quote "
            "and import these lines again.",
        )
    ]
    assert emails() == []
    assert accounting(done) == (1, 0, 1)
    assert "Rows read: 1 = 0 imported + 1 reported." in out


def test_rows_after_the_unclosed_quote_are_reported_not_swallowed_and_rows_before_land(
    account, tmp_path, path
):
    text = "email,first_name\nann@example.com,Ann\n" + UNCLOSED.split("\n", 1)[1]

    done, _ = import_file(tmp_path, text)

    assert emails() == ["ann@example.com"]
    assert [line for line, _, _ in errors_of(done)] == [3]
    assert accounting(done) == (2, 1, 1)


def test_a_quote_closed_too_late_swallows_no_row_silently(account, tmp_path, path):
    text = (
        "email,first_name\n"
        'q1@example.com,"Open\n'
        "q2@example.com,Two\n"
        'q3@example.com,Three"\n'
        "q4@example.com,Four\n"
    )

    done, _ = import_file(tmp_path, text)

    assert emails() == ["q4@example.com"]
    assert errors_of(done) == [
        (
            2,
            "",
            "A quoted value runs over lines 2–4, and lines 3, 4 inside it read as a row of "
            "its own: a quote is closed too late, or not at all. None of lines 2–4 was "
            "imported; fix the quotes and import these lines again.",
        )
    ]
    assert accounting(done) == (2, 1, 1)


def test_a_value_that_truly_spans_lines_still_imports(account, tmp_path, path):
    text = (
        "email,first_name,notes\n"
        'ann@example.com,Ann,"Called, no answer\nTry again, Tuesday\nann@example.com"\n'
        'bob@example.com,"Bob\nJr",\n'
    )

    done, _ = import_file(tmp_path, text)

    assert errors_of(done) == []
    assert list(Contact.objects.order_by("email").values_list("email", "first_name")) == [
        ("ann@example.com", "Ann"),
        ("bob@example.com", "Bob\nJr"),
    ]
    assert accounting(done) == (2, 2, 0)


def test_text_after_a_closing_quote_is_a_row_error_and_the_next_line_imports(
    account, tmp_path, path
):
    text = 'email,first_name\nq1@example.com,"Ann"ie\nq2@example.com,Bob\n'

    done, _ = import_file(tmp_path, text)

    assert emails() == ["q2@example.com"]
    assert errors_of(done) == [
        (
            2,
            "",
            "A closing quote is followed by more text (line 2): quote the whole value, and "
            'write a quote inside it twice (""). Not imported.',
        )
    ]
    assert accounting(done) == (2, 1, 1)


def test_a_nul_in_a_field_is_a_row_error_and_the_other_rows_import(account, tmp_path, path):
    text = (
        "email,first_name,company\n"
        "q1@example.com,Op\x00en,Acme\n"
        "q2@example.com,Two,Beta\n"
        "q3\x00@example.com,Three,Gamma\n"
    )

    done, out = import_file(tmp_path, text)

    assert emails() == ["q2@example.com"]
    assert errors_of(done) == [
        (2, "first_name", "Contains a NUL character (\\0), which cannot be stored."),
        (4, "email", "“q3\\0@example.com” is not a valid email address."),
    ]
    assert accounting(done) == (3, 1, 2)
    assert "Rows read: 3 = 1 imported + 2 reported." in out


def test_the_api_reports_a_nul_row_and_an_unclosed_quote_with_their_lines(
    account, marketing_ops, path, django_capture_on_commit_callbacks
):
    api = APIClient()
    api.force_authenticate(marketing_ops)
    text = (
        "email,first_name\nann@example.com,Ann\nbob@example.com,B\x00b\n" + 'cy@example.com,"Cy\n'
    )

    created = api.post(
        IMPORTS,
        {"file": SimpleUploadedFile("c.csv", text.encode(), "text/csv")},
        format="multipart",
    )
    assert created.status_code == 201, created.content
    assert {k: created.data["preview"][k] for k in ("rows", "new", "invalid")} == {
        "rows": 3,
        "new": 1,
        "invalid": 2,
    }
    with django_capture_on_commit_callbacks(execute=True):
        committed = api.post(f"{IMPORTS}{created.data['id']}/commit/")
    assert committed.status_code == 202
    detail = api.get(f"{IMPORTS}{created.data['id']}/").data
    errors = api.get(f"{IMPORTS}{created.data['id']}/errors/")

    assert detail["status"] == "done"
    assert {k: detail["counts"][k] for k in ("rows", "imported", "reported")} == {
        "rows": 3,
        "imported": 1,
        "reported": 2,
    }
    lines = b"".join(errors.streaming_content).decode().splitlines()
    assert [line.split(",")[0] for line in lines] == ["line", "3", "4"]
    assert emails() == ["ann@example.com"]


def test_a_nul_in_the_header_is_a_400_and_nothing_is_stored(account, marketing_ops):
    api = APIClient()
    api.force_authenticate(marketing_ops)
    upload = SimpleUploadedFile("c.csv", b"email,first\x00name\na@example.com,A\n", "text/csv")

    response = api.post(IMPORTS, {"file": upload}, format="multipart")

    assert response.status_code == 400
    assert "column 2 contains a NUL character" in response.data["detail"]
    assert not ContactImport.objects.exists()


def test_the_admin_import_shows_the_accounting(
    account, ops_client, path, django_capture_on_commit_callbacks
):
    upload = SimpleUploadedFile(
        "c.csv", ("email,first_name\nann@example.com,Ann\n" + 'q1@example.com,"Open\n').encode()
    )
    response = ops_client.post("/admin/contacts/contactimport/add/", {"file": upload})
    assert response.status_code == 302
    contact_import = ContactImport.objects.get()
    mapping = ops_client.post(response["Location"], {"column_0": "email", "column_1": "first_name"})
    with django_capture_on_commit_callbacks(execute=True):
        ops_client.post(mapping["Location"], {})

    page = ops_client.get(f"/admin/contacts/contactimport/{contact_import.pk}/change/")

    assert "2 = 1 imported + 1 reported (row errors)" in page.content.decode()
    assert emails() == ["ann@example.com"]
