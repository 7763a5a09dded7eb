"""The export never passes a short file for a complete one: its filters are checked and its
first chunk is read before the response starts, and a failure later ends the file with a
line saying it is incomplete (the API, the admin and the command)."""

import csv
import datetime as dt
import io

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from contacts.imports import export
from contacts.imports.export import EXPORT_INCOMPLETE
from contacts.models import Contact
from tests.factories import ContactFactory, UserFactory

pytestmark = pytest.mark.usefixtures("account")

EXPORT = "/api/contacts/export/"


class ExportBroke(Exception):
    """Stands for whatever fails in the middle of an export (a lost connection…)."""


@pytest.fixture
def viewer(db):
    return UserFactory(username="viewer", groups=["Auditor"])


@pytest.fixture
def client_of(viewer):
    client = APIClient()
    client.force_authenticate(viewer)
    client.raise_request_exception = False
    return client


@pytest.fixture
def three():
    return [ContactFactory(email=f"c{n}@example.com") for n in (1, 2, 3)]


def breaks_at(monkeypatch, row: int) -> None:
    """The export's row formatting fails at its `row`-th contact (1-based)."""
    real, calls = export.is_pending, []

    def is_pending(*args):
        calls.append(1)
        if len(calls) == row:
            raise ExportBroke
        return real(*args)

    monkeypatch.setattr(export, "is_pending", is_pending)


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_an_offset_past_15_59_exports_the_same_instant(client_of):
    early, late = (
        ContactFactory(email="early@example.com"),
        ContactFactory(email="late@example.com"),
    )
    Contact.objects.filter(pk=early.pk).update(
        last_engaged_at=dt.datetime(2026, 1, 1, 15, 30, tzinfo=dt.UTC)
    )
    Contact.objects.filter(pk=late.pk).update(
        last_engaged_at=dt.datetime(2026, 1, 1, 16, 30, tzinfo=dt.UTC)
    )

    response = client_of.get(EXPORT, {"engaged_after": "2026-01-01T00:00:00-16:00"})

    assert response.status_code == 200
    rows = rows_of(b"".join(response.streaming_content).decode())
    assert [row[1] for row in rows[1:]] == ["late@example.com"]


def test_an_out_of_range_filter_is_a_400_before_anything_streams(client_of, three):
    response = client_of.get(EXPORT, {"created_after": "9999-12-31T23:00:00-16:00"})

    assert response.status_code == 400
    assert not response.streaming
    assert "out of range" in response.json()["created_after"][0]


def test_a_failure_in_the_first_chunk_is_an_error_response_not_a_header_only_200(
    client_of, three, monkeypatch
):
    breaks_at(monkeypatch, 1)

    response = client_of.get(EXPORT)

    assert response.status_code == 500
    assert not response.streaming


def test_a_failure_mid_stream_ends_the_file_with_the_incomplete_line_and_aborts(
    client_of, three, monkeypatch
):
    monkeypatch.setattr(export, "EXPORT_CHUNK_SIZE", 1)  # a piece a contact
    breaks_at(monkeypatch, 3)

    response = client_of.get(EXPORT)
    assert response.status_code == 200  # already streaming when it breaks
    received = []
    with pytest.raises(ExportBroke):  # the transfer is aborted, not ended cleanly
        for piece in response.streaming_content:
            received.append(piece.decode())

    text = "".join(received)
    assert text.endswith(EXPORT_INCOMPLETE)
    assert [row[1] for row in rows_of(text.removesuffix(EXPORT_INCOMPLETE))[1:]] == [
        "c1@example.com",
        "c2@example.com",
    ]


def test_the_admin_export_reads_its_first_chunk_before_answering(viewer, three, monkeypatch):
    from django.test import Client

    client = Client(raise_request_exception=False)
    client.force_login(viewer)
    breaks_at(monkeypatch, 1)

    response = client.get("/admin/contacts/contact/export/")

    assert response.status_code == 500
    assert not response.streaming


def test_the_command_leaves_no_partial_file_and_keeps_an_older_one(three, tmp_path, monkeypatch):
    path = tmp_path / "contacts.csv"
    path.write_text("yesterday's export\n")
    monkeypatch.setattr(export, "EXPORT_CHUNK_SIZE", 1)
    breaks_at(monkeypatch, 3)

    with pytest.raises(CommandError, match="The export stopped on an error"):
        call_command("export_contacts", "--output", str(path), stderr=io.StringIO())

    assert path.read_text() == "yesterday's export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["contacts.csv"]


def test_the_command_on_stdout_ends_with_the_incomplete_line(three, monkeypatch):
    monkeypatch.setattr(export, "EXPORT_CHUNK_SIZE", 1)
    breaks_at(monkeypatch, 3)
    out = io.StringIO()

    with pytest.raises(ExportBroke):
        call_command("export_contacts", stdout=out)

    assert out.getvalue().endswith(EXPORT_INCOMPLETE)
