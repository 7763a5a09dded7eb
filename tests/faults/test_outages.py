"""The broker down: the app still answers, and what enqueues says what was not queued (a 503
with the reason, not a 500), keeps the job and lets it be resumed once the queue is back.
The database down: every page and endpoint answers 503 with a message, not a traceback.

These need neither Redis nor a worker: they point the app at closed ports. They run with
the ordinary suite on both databases.
"""

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from contacts.imports.models import ContactImport
from contacts.models import Contact
from tests.factories import ContactFactory
from tests.faults.conftest import ROOT, web_broker
from tests.faults.scenarios import import_file, mql_workflow
from workflows.models import WorkflowRun

CLOSED_PORT = 8159  # nothing listens here (checked): a broker or database that is down
SERVER_PORT = 8151


def closed(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def broker_down(settings, tmp_path):
    assert closed(CLOSED_PORT)
    settings.MEDIA_ROOT = tmp_path
    settings.EMBEDDED_BACKGROUND_JOBS = False
    with web_broker(settings, f"redis://127.0.0.1:{CLOSED_PORT}/5"):
        yield


def previewed_import(api) -> int:
    response = api.post(
        "/api/imports/",
        {"file": SimpleUploadedFile("people.csv", import_file(3).encode()), "marketing": True},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


@pytest.mark.django_db(transaction=True)
def test_with_the_broker_down_an_import_commit_says_it_was_not_queued_and_resumes_later(
    account, api, broker_down, settings
):
    ContactFactory(email="kept@example.com")
    pk = previewed_import(api)

    # When the commit cannot reach the broker
    response = api.post(f"/api/imports/{pk}/commit/")

    # Then the answer says what was not queued and what to do, and the import waits, failed
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert detail.startswith(f"The import #{pk} (people.csv) could not be queued: the task queue")
    assert "resume it once the queue is back" in detail
    stored = ContactImport.objects.get(pk=pk)
    assert (stored.status, stored.message) == ("failed", detail)
    # and the app still answers, with nothing lost
    assert api.get("/api/contacts/").status_code == 200
    assert list(Contact.objects.values_list("email", flat=True)) == ["kept@example.com"]

    # When the queue is back (here: tasks in-process), the import is resumed and runs
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from crm.celery import app

    app.conf.task_always_eager = True
    assert api.post(f"/api/imports/{pk}/resume/").status_code == 202
    assert ContactImport.objects.get(pk=pk).status == "done"
    assert Contact.objects.count() == 4


@pytest.mark.django_db(transaction=True)
def test_with_the_broker_down_the_admin_commit_shows_the_reason_on_the_import_page(
    account, root, api, broker_down
):
    pk = previewed_import(api)
    client = Client()
    client.force_login(root)

    response = client.post(f"/admin/contacts/contactimport/{pk}/preview/", {"confirm_count": "3"})

    assert response.status_code == 302
    assert response["Location"] == f"/admin/contacts/contactimport/{pk}/change/"
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert len(shown) == 1 and "could not be queued" in shown[0]
    page = client.get(response["Location"]).content.decode()
    assert 'id="import-resume"' in page


@pytest.mark.django_db(transaction=True)
def test_with_the_broker_down_a_workflow_run_and_a_recompute_say_they_were_not_queued(
    account, api, broker_down
):
    workflow = mql_workflow()

    run = api.post(f"/api/workflows/{workflow.pk}/run/")
    recompute = api.post("/api/scoring-rules/recompute/")

    assert run.status_code == 503
    assert "could not be queued" in run.json()["detail"]
    assert "resume it once the queue is back" in run.json()["detail"]
    recorded = WorkflowRun.objects.get()
    assert (recorded.status, recorded.error) == ("failed", run.json()["detail"])
    assert recompute.status_code == 503
    assert recompute.json()["detail"].startswith("The lead-score recompute could not be queued")


def serve_without_a_database(tmp_path) -> subprocess.Popen:
    """The app in production settings, its database on a port where nothing listens."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "DJANGO_SETTINGS_MODULE": "crm.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{CLOSED_PORT}/marketable",
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{CLOSED_PORT}/5",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
    }
    serve = (
        "from wsgiref.simple_server import make_server\n"
        "from django.core.wsgi import get_wsgi_application\n"
        f"make_server('127.0.0.1', {SERVER_PORT}, get_wsgi_application()).serve_forever()\n"
    )
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 (closed with the process)
    server = subprocess.Popen(
        [sys.executable, "-c", serve], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while closed(SERVER_PORT):
        assert server.poll() is None, (tmp_path / "server.log").read_text()
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    return server


def get(path: str, **headers) -> tuple[int, str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{SERVER_PORT}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_with_the_database_down_pages_and_the_api_answer_503_with_a_message(tmp_path):
    assert closed(CLOSED_PORT) and closed(SERVER_PORT)
    server = serve_without_a_database(tmp_path)
    try:
        api = get("/api/contacts/", Authorization="Token 0123456789abcdef")
        page = get("/admin/", Cookie="sessionid=abcdefghijklmnopqrstuvwxyz012345")
        form = get("/forms/newsletter/")
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert api[:2] == (503, "application/json")
    assert api[2].startswith('{"detail": "The database is not answering')
    for status, content_type, body in (page, form):
        assert (status, content_type) == (503, "text/html; charset=utf-8")
        assert "<h1>Service unavailable</h1><p>The database is not answering" in body
    assert "Traceback" not in api[2] + page[2] + form[2]
