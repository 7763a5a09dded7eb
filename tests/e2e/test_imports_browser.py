"""A CSV import in a real browser: upload, mapping, preview, confirm, the progress page
while the job runs in the background, the result, and the row errors file."""

import csv
import io
import threading

from django.utils import timezone

from contacts.imports import services as import_services
from contacts.imports.models import ContactImport, ImportStatus
from contacts.models import Contact
from tests.e2e.flows import count_text

BAD_ROW_LINES = {4, 5, 6}  # an invalid email, an unknown lifecycle stage, a duplicate


def import_file(existing: Contact) -> str:
    rows = [
        ["Email", "First Name", "Last Name", "Lifecycle Stage"],
        ["ann@browser-import.example", "Ann", "One", "lead"],  # line 2: new
        [existing.email, "Renamed", existing.last_name, "customer"],  # 3: updated
        ["not-an-email", "Bad", "Email", "lead"],  # 4: invalid
        ["bo@browser-import.example", "Bo", "Two", "wizard"],  # 5: invalid stage
        ["cy@browser-import.example", "Cy", "Three", "mql"],  # 6: an earlier duplicate
        ["cy@browser-import.example", "Cy", "Three", "sql"],  # 7: new, the last row wins
        ["di@browser-import.example", "", "", "subscriber"],  # 8: new
    ]
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def test_a_csv_with_bad_rows_is_previewed_imported_and_its_errors_downloaded(
    page, login, demo, shot, settings, tmp_path, monkeypatch
):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    # The job runs in a thread, as in the embedded default, and waits until the test has
    # seen its progress page: the page must poll and show the result when it ends.
    settings.EMBEDDED_BACKGROUND_JOBS = True
    release = threading.Event()
    run = import_services.contact_import_run

    def run_when_released(**kwargs):
        release.wait(timeout=30)
        return run(**kwargs)

    monkeypatch.setattr(import_services, "contact_import_run", run_when_released)

    existing = Contact.objects.filter(email__endswith=".example").order_by("pk").first()
    path = tmp_path / "november-leads.csv"
    path.write_text(import_file(existing), encoding="utf-8")
    contacts_before = Contact.objects.count()

    goto = login(username="ops", groups=["Marketing ops"])
    goto("/admin/contacts/contactimport/add/")
    page.set_input_files("#id_file", str(path))
    shot("upload")
    with page.expect_navigation():
        page.click("#import-upload-form input[type=submit]")
    contact_import = ContactImport.objects.get()
    assert page.url.endswith(f"/admin/contacts/contactimport/{contact_import.pk}/mapping/")
    shot("mapping")
    with page.expect_navigation():
        page.click("#import-mapping-form input[type=submit]")
    assert page.url.endswith(f"/admin/contacts/contactimport/{contact_import.pk}/preview/")
    shot("preview")

    def preview_count(row: str) -> str:
        return page.inner_text(f"#import-preview #preview-{row} td")

    assert [preview_count(row) for row in ("rows", "new", "updated", "invalid", "duplicates")] == [
        count_text(n) for n in (7, 3, 1, 2, 1)
    ]
    assert Contact.objects.count() == contacts_before  # a preview writes no contact

    with page.expect_download() as download:
        page.click("#errors-link")
    assert error_lines(download.value) == BAD_ROW_LINES

    with page.expect_navigation():
        page.click("#import-confirm-form input[type=submit]")
    assert page.url.endswith(f"/admin/contacts/contactimport/{contact_import.pk}/change/")
    progress = page.locator("#import-progress")
    assert progress.get_attribute("data-running") == "1"
    shot("progress")

    # The page polls the job's progress and reloads with the result once it has ended.
    release.set()
    page.wait_for_selector("#import-progress[data-running='0']", timeout=30_000)
    shot("result")
    contact_import.refresh_from_db()
    assert contact_import.status == ImportStatus.DONE
    assert page.inner_text("#import-total") == count_text(contact_import.total_rows)
    assert Contact.objects.count() == contacts_before + 3
    assert Contact.objects.get(email="cy@browser-import.example").lifecycle_stage == "sql"
    existing.refresh_from_db()
    assert existing.first_name == "Renamed"
    # An import not marked marketing changes no status.
    assert not Contact.objects.billable(timezone.now()).filter(
        email__endswith="@browser-import.example"
    )

    with page.expect_download() as download:
        page.click(".field-errors_link a")
    assert error_lines(download.value) == BAD_ROW_LINES


def error_lines(download) -> set[int]:
    with open(download.path(), encoding="utf-8") as errors:
        rows = list(csv.DictReader(errors))
    assert all(row["message"] for row in rows)
    return {int(row["line"]) for row in rows}
