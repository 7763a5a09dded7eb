"""The import pages in words: the mapping as a table, the confirm button's counts, the
phase the job is in, the file size, one entry for the default source."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from contacts.imports.admin import import_button_label
from contacts.imports.models import ContactImport, ImportStatus
from contacts.imports.parsing import IMPORT_DEFAULT_SOURCE
from contacts.models import SourceKind
from tests.factories import SourceFactory


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path


def upload(text: str) -> SimpleUploadedFile:
    return SimpleUploadedFile("people.csv", text.encode(), content_type="text/csv")


def previewed(ops_client, text: str) -> tuple[ContactImport, str]:
    ops_client.post("/admin/contacts/contactimport/add/", {"file": upload(text)})
    contact_import = ContactImport.objects.get()
    mapping_url = f"/admin/contacts/contactimport/{contact_import.pk}/mapping/"
    response = ops_client.post(mapping_url, {"column_0": "email", "column_1": "last_name"})
    assert response.status_code == 302, response.content
    return contact_import, ops_client.get(response["Location"]).content.decode()


def test_the_confirm_button_counts_the_rows_imported_and_those_skipped(account, ops_client):
    rows = "".join(f"p{n}@example.com,Doe\n" for n in range(18))
    text = "Email,Surname\n" + rows + "not-an-email,Bad\nalso bad,Worse\n"

    _, html = previewed(ops_client, text)

    assert 'value="Import 18 rows (2 with errors will be skipped)"' in html


@pytest.mark.parametrize(
    "preview, label",
    [
        ({"rows": 1, "invalid": 0, "duplicates": 0}, "Import 1 row"),
        ({"rows": 5_018, "invalid": 0, "duplicates": 0}, "Import 5,018 rows"),
        (
            {"rows": 3, "invalid": 1, "duplicates": 1},
            "Import 1 row (2 with errors will be skipped)",
        ),
    ],
)
def test_the_button_label_has_the_right_plural_and_separators(preview, label):
    assert import_button_label(preview) == label


def test_the_preview_shows_the_mapping_as_a_table_of_columns_and_fields(account, ops_client):
    _, html = previewed(ops_client, "Email,Surname,Notes\na@example.com,Doe,x\n")

    assert '<th scope="col">CSV column</th><th scope="col">Contact field</th>' in html
    assert "<tr><td>Email</td><td>Email</td></tr>" in html
    assert "<tr><td>Surname</td><td>Last name</td></tr>" in html
    assert "<tr><td>Notes</td><td>ignored</td></tr>" in html
    assert "{&quot;" not in html and '{"Email"' not in html  # no raw JSON


def test_the_import_page_says_its_phase_in_words_and_its_size_in_units(account, ops_client):
    contact_import, _ = previewed(ops_client, "Email,Surname\na@example.com,Doe\n")
    ContactImport.objects.filter(pk=contact_import.pk).update(
        status=ImportStatus.RUNNING,
        phase="marketing",
        file_size=1_463,
        lease_token="worker",
        lease_expires_at=timezone.now() + dt.timedelta(minutes=5),
    )

    html = ops_client.get(f"/admin/contacts/contactimport/{contact_import.pk}/change/").content
    page = html.decode()
    progress = ops_client.get(f"/admin/contacts/contactimport/{contact_import.pk}/progress/")

    assert (
        '<strong id="import-status">Running</strong><span id="import-phase">: making contacts marketing</span>'
        in page
    )
    assert "saving" not in page.split('id="import-progress"')[1].split("</div>")[0]
    assert "1.4\xa0KB" in page
    assert progress.json()["phase_display"] == "making contacts marketing"


def test_the_default_source_is_offered_once(account, ops_client):
    SourceFactory(name=IMPORT_DEFAULT_SOURCE, kind=SourceKind.IMPORT)
    SourceFactory(name="Trade fair 2026", kind=SourceKind.IMPORT)

    html = ops_client.get("/admin/contacts/contactimport/add/").content.decode()

    assert html.count(IMPORT_DEFAULT_SOURCE) == 1
    assert f'<option value="" selected>{IMPORT_DEFAULT_SOURCE} (the default)</option>' in html
    assert "Trade fair 2026</option>" in html


def test_the_marketing_box_sits_before_its_label(account, ops_client):
    ops_client.post("/admin/contacts/contactimport/add/", {"file": upload("Email\na@b.co\n")})
    contact_import = ContactImport.objects.get()

    html = ops_client.get(f"/admin/contacts/contactimport/{contact_import.pk}/mapping/").content
    row = html.decode().split('class="flex-container checkbox-row">')[1]

    assert row.startswith('<input type="checkbox" name="marketing"')
    assert '<label class="vCheckboxLabel" for="id_marketing">' in row
