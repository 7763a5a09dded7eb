"""The data the role matrix walks over: one row of every table, the staff of every role,
their API tokens and their logged-in admin sessions with CSRF tokens.

Built once per test module (`world` fixture in the matrix modules) inside a transaction
that the module rolls back at its end; each test (one cell of the matrix) runs in a
savepoint of it, rolled back after the cell, so every cell starts from this same state and
a denied cell is compared with one snapshot taken once (`db_snapshot`).

Everything is written through the services, as the product writes it, in time order (the
status service's instants only grow): a marketing history in the period before last (which
is closed, so it has an invoice), the previous period left unclosed (the close page has
something to close), and the current period.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
from html.parser import HTMLParser
from types import SimpleNamespace

from django.apps import apps
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.crm.permission_rows import ANONYMOUS, AUDITOR, BILLING, OPS, SALES, SUPERUSER
from tests.factories import ContactFactory, SourceFactory, UserFactory, set_guardrails

PASSWORD = "pw"


# Tables a denied request must leave exactly as they were: every model of these apps,
# their many-to-many tables included. Sessions are left out (a request may store its
# messages there); the admin's log is in (a refused change writes no log entry).
SNAPSHOT_APPS = ("crm", "contacts", "workflows", "billing", "auth", "authtoken", "admin")

MQL = {
    "filterGroups": [
        {"filters": [{"propertyName": "lifecycle_stage", "operator": "EQ", "value": "mql"}]}
    ]
}
LEADS = {
    "filterGroups": [
        {"filters": [{"propertyName": "lifecycle_stage", "operator": "EQ", "value": "lead"}]}
    ]
}
SUBSCRIBERS = {
    "filterGroups": [
        {"filters": [{"propertyName": "lifecycle_stage", "operator": "EQ", "value": "subscriber"}]}
    ]
}
IMPORT_CSV = b"Email,First name\nnew.lead@example.com,New\nnot-an-email,Bad\n"


def _periods(now: dt.datetime):
    from crm.calendar import BillingCalendar

    calendar = BillingCalendar.for_account()
    current = calendar.period_bounds(now)
    previous = calendar.period_bounds(current[0] - dt.timedelta(microseconds=1))
    before = calendar.period_bounds(previous[0] - dt.timedelta(microseconds=1))
    return before, previous, current


def _account_and_prices():
    from billing.models import Subscription
    from crm.models import Account

    account = Account.load()
    account.update_day, account.yearly_plan, account.time_zone = 1, False, "UTC"
    account.save()
    subscription = Subscription.load()
    subscription.included_contacts = 4
    subscription.block_size, subscription.block_price = 5, 1_000
    subscription.alert_recipients = "billing@example.com"
    subscription.save()
    return account, subscription


def _staff(w) -> None:
    w.users = {
        OPS: UserFactory(username="m-ops", groups=["Marketing ops"]),
        SALES: UserFactory(username="m-sales", groups=["Sales"]),
        BILLING: UserFactory(username="m-billing", groups=["Billing admin"]),
        AUDITOR: UserFactory(username="m-auditor", groups=["Auditor"]),
        SUPERUSER: UserFactory(username="m-root", is_superuser=True),
    }
    w.tokens = {role: Token.objects.create(user=user).key for role, user in w.users.items()}
    w.spare_user = UserFactory(username="spare", is_staff=False)
    w.tokenless_user = UserFactory(username="tokenless", is_staff=False)
    w.spare_group = Group.objects.create(name="Spare group")
    w.spare_token = Token.objects.create(user=w.spare_user)


def _history(w) -> None:
    """The period before last: Cy marketing (then closed, with its invoice)."""
    from billing.services import billing_close_periods
    from contacts.status.results import StatusSource
    from contacts.status.services import contacts_set_marketing

    before, previous, _ = _periods(timezone.now())
    w.cy = ContactFactory(email="cy@example.com", lifecycle_stage="customer")
    contacts_set_marketing(
        contacts=w.cy,
        source=StatusSource("manual", name="history"),
        at=before[0] + dt.timedelta(days=1),
    )
    billing_close_periods(as_of=previous[0])
    w.dan = ContactFactory(email="dan@example.com", lifecycle_stage="customer")
    contacts_set_marketing(
        contacts=w.dan,
        source=StatusSource("manual", name="history"),
        at=previous[0] + dt.timedelta(days=1),
    )


def _contacts(w) -> None:
    from contacts.selectors import source_for_manual_entry
    from contacts.status.results import StatusSource
    from contacts.status.services import contacts_rollover, contacts_set_marketing

    w.manual_source = source_for_manual_entry()
    w.unused_source = SourceFactory(name="Unused source", kind="manual")
    contacts_rollover()  # the current period's boundary (rotation promotes after it)
    w.ann = ContactFactory(email="ann@example.com", lifecycle_stage="mql", source=w.manual_source)
    w.bob = ContactFactory(email="bob@example.com", lifecycle_stage="lead", source=w.manual_source)
    w.gus = ContactFactory(email="gus@example.com", lifecycle_stage="customer", unsubscribed=True)
    w.hal = ContactFactory(email="hal@example.com", lifecycle_stage="lead")
    w.ivy = ContactFactory(email="ivy@example.com", lifecycle_stage="other")
    w.jay = ContactFactory(email="jay@example.com", lifecycle_stage="other")
    w.kim = ContactFactory(email="kim@example.com", lifecycle_stage="subscriber")
    w.lea = ContactFactory(email="lea@example.com", lifecycle_stage="subscriber")
    contacts_set_marketing(contacts=w.gus, source=StatusSource("manual", name="setup"))


def _workflows(w) -> None:
    from contacts.services import contact_update
    from contacts.status.models import PendingApproval
    from contacts.status.results import ChangeHeld, StatusSource
    from contacts.status.services import contacts_set_marketing
    from workflows.hygiene import hygiene_run
    from workflows.models import (
        HygienePolicy,
        HygieneTrigger,
        RotationPlan,
        RunTrigger,
        ScoringRule,
    )
    from workflows.rotation import rotation_tick
    from workflows.runs import workflow_run_now
    from workflows.scoring import engagement_ingest_and_score
    from workflows.services import workflow_create

    w.workflow = workflow_create(
        name="MQL definition", criteria=MQL, actions=[{"type": "set_marketing"}], enabled=True
    )
    w.run = workflow_run_now(workflow=w.workflow, trigger=RunTrigger.MANUAL)
    w.big_workflow = workflow_create(
        name="All leads", criteria=LEADS, actions=[{"type": "set_marketing"}], max_new_marketing=1
    )
    w.held_run = workflow_run_now(workflow=w.big_workflow, trigger=RunTrigger.MANUAL)
    assert w.held_run.status == "held", w.held_run.status
    # A run whose worker died: failed, with no lease, so it may be resumed.
    w.failed_run = workflow_run_now(workflow=w.workflow, trigger=RunTrigger.MANUAL)
    type(w.failed_run).objects.filter(pk=w.failed_run.pk).update(
        status="failed", lease_token="", lease_expires_at=None
    )
    w.spare_workflow = workflow_create(
        name="Spare workflow", criteria=LEADS, actions=[{"type": "set_marketing"}]
    )
    w.scoring_rule = ScoringRule.objects.create(name="Opens", event_type="email_open", points=5)
    w.spare_rule = ScoringRule.objects.create(name="Clicks", event_type="email_click", points=2)
    engagement_ingest_and_score(
        items=[
            {
                "contact_id": w.ann.pk,
                "type": "email_open",
                "occurred_at": timezone.now().isoformat(),
                "external_id": "open-ann-1",
            }
        ]
    )
    contact_update(contact=w.ann, lead_score=99)  # a hand-made score: recomputing restores 5
    w.policy = HygienePolicy.objects.create(name="Unsubscribed out", schedule="manual")
    w.spare_policy = HygienePolicy.objects.create(name="Spare policy", schedule="manual")
    w.hygiene_run = hygiene_run(
        options={"include_unsubscribed": False, "criteria": {"filterGroups": []}},
        idempotency_key="world-hygiene",
        trigger=HygieneTrigger.MANUAL,
        policy=w.policy,
    )
    w.plan = RotationPlan.objects.create(
        name="Prospects A", criteria=SUBSCRIBERS, size=1, rotate_per_period=1
    )
    rotation_tick(plan=w.plan)
    w.idle_plan = RotationPlan.objects.create(
        name="Prospects B", criteria=SUBSCRIBERS, size=1, rotate_per_period=1
    )
    set_guardrails(operation_limit=1)
    with contextlib.suppress(ChangeHeld):
        contacts_set_marketing(
            contacts=[w.ivy.pk, w.jay.pk],
            source=StatusSource("bulk_action", name="Admin bulk action"),
            guarded=True,
            idempotency_key="world-held",
        )
    set_guardrails(operation_limit=None)
    w.approval = PendingApproval.objects.get()


def _intake_and_outreach(w) -> None:
    from contacts.intake.models import Chatflow, Form
    from contacts.intake.services import (
        ad_account_create,
        ad_lead_receive,
        chatflow_save,
        connected_app_create,
        form_save,
        form_submit,
    )
    from contacts.models import Contact
    from contacts.outreach.models import AdAudience, ContactList
    from contacts.outreach.services import (
        ad_audience_add,
        communication_send,
        contact_list_add,
        contact_unsubscribe,
        marketing_email_create,
        marketing_email_send,
        unsubscribe_token,
    )

    w.form = form_save(form=Form(name="Newsletter", slug="newsletter"))
    w.spare_form = form_save(form=Form(name="Spare form", slug="spare-form"))
    w.spare_chatflow = chatflow_save(chatflow=Chatflow(name="Spare bot"))
    w.spare_app, _ = connected_app_create(name="Spare app")
    w.spare_ad_account, _ = ad_account_create(name="Spare ads", platform="google")
    form_submit(form=w.form, data={"email": "eve@example.com"})
    w.chatflow = chatflow_save(chatflow=Chatflow(name="Pricing bot"))
    w.app, _ = connected_app_create(name="Shop", two_way_sync=True)
    w.ad_account, _ = ad_account_create(name="Ads", platform="facebook")
    ad_lead_receive(ad_account=w.ad_account, lead_id="L-1", data={"email": "fay@example.com"})
    w.contact_list = ContactList.objects.create(name="VIPs")
    contact_list_add(contact_list=w.contact_list, contacts=[w.ann.pk])
    w.spare_list = ContactList.objects.create(name="Spare list")
    w.audience = AdAudience.objects.create(name="Lookalikes", platform="facebook")
    w.spare_audience = AdAudience.objects.create(name="Spare audience", platform="google")
    ad_audience_add(audience=w.audience, contacts=[w.ann.pk])
    body = "Hello {first_name}. Unsubscribe: {unsubscribe_url}"
    w.sent_email = marketing_email_create(
        name="Autumn news", subject="Autumn", body=body, audience_filter={"lifecycle_stage": "mql"}
    )
    marketing_email_send(email=w.sent_email, contacts=Contact.objects.filter(pk=w.ann.pk))
    w.email = marketing_email_create(
        name="Spring news", subject="Spring", body=body, audience_filter={"lifecycle_stage": "mql"}
    )
    w.spare_email = marketing_email_create(
        name="Spare email", subject="Spare", body=body, audience_list=w.contact_list
    )
    contact_unsubscribe(token=unsubscribe_token(contact_id=w.cy.pk, email_id=w.sent_email.pk))
    w.communication = communication_send(
        contact=w.bob, type="sales_email", subject="Hello", body="A one-to-one note."
    )


def _imports(w) -> None:
    from contacts.imports.services import contact_import_create, contact_import_preview

    upload = SimpleUploadedFile("leads.csv", IMPORT_CSV, "text/csv")
    w.contact_import = contact_import_preview(
        contact_import=contact_import_create(file=upload, file_name="leads.csv", actor=None)
    )
    # An import whose worker died before it began saving: failed and resumable.
    again = SimpleUploadedFile("more-leads.csv", IMPORT_CSV, "text/csv")
    w.failed_import = contact_import_preview(
        contact_import=contact_import_create(file=again, file_name="more-leads.csv", actor=None)
    )
    type(w.failed_import).objects.filter(pk=w.failed_import.pk).update(
        status="failed", committed_at=timezone.now(), lease_token="", lease_expires_at=None
    )


def _bulk_jobs(w) -> None:
    from contacts.models import Contact
    from contacts.status.bulk import bulk_status_job_submit

    # A bulk status change whose worker died before it began: failed and resumable.
    w.bulk_job, _ = bulk_status_job_submit(
        contacts=Contact.objects.filter(pk__in=[w.ivy.pk, w.jay.pk]),
        operation="set_marketing",
        criteria={"list_filters": {"lifecycle_stage__exact": "other"}},
        origin="admin",
        actor=None,
        idempotency_key="world-bulk-job",
        enqueue=False,
    )
    type(w.bulk_job).objects.filter(pk=w.bulk_job.pk).update(status="failed")


def _billing(w) -> None:
    from billing.alerts import billing_fire_alerts, billing_record_usage
    from billing.models import BillingPeriod, Invoice
    from contacts.hooks import UsageChange
    from contacts.status.selectors import usage_current

    now = timezone.now()
    usage = usage_current(at=now)
    w.alert = billing_fire_alerts(
        w.subscription, usage.period_start, [("threshold", 75)], peak=usage.peak_count, now=now
    )[0]
    billing_record_usage(
        change=UsageChange(
            operation="set_marketing",
            at=now,
            day=timezone.localdate(now),
            period_start=usage.period_start,
            live_count=usage.live_count,
            peak_count=usage.peak_count,
            became_marketing=1,
        )
    )
    w.period = BillingPeriod.objects.get()
    w.invoice = Invoice.objects.get()


def build_world() -> SimpleNamespace:
    """Every kind of row, made through the services (see the module docstring)."""
    w = SimpleNamespace()
    w.account, w.subscription = _account_and_prices()
    _staff(w)
    _history(w)
    _contacts(w)
    _workflows(w)
    _intake_and_outreach(w)
    _imports(w)
    _bulk_jobs(w)
    _billing(w)
    _check(w)
    return w


def _check(w) -> None:
    """What the effects of allowed cells are measured against: each starts elsewhere."""
    now = timezone.now()
    for contact in (w.ann, w.bob, w.gus):
        contact.refresh_from_db()
    assert not w.bob.is_billable(now), "bob starts non-marketing"
    assert w.ann.is_billable(now) and w.ann.pending_from(now) is None, "ann: marketing"
    assert w.gus.is_billable(now) and w.gus.pending_from(now) is None, "gus: marketing"
    assert w.ann.lead_score == 99
    assert not w.spare_workflow.runs.exists()
    assert w.contact_import.status == "previewed"
    assert w.email.status == "draft"


def log_in(w, role: str) -> tuple[Client, str]:
    """A browser of `role`: logged in through the admin's login form (anonymous: not), with
    CSRF checks on, and the CSRF token read from a page's form."""
    client = Client(enforce_csrf_checks=True)
    page = client.get("/admin/login/")
    if role != ANONYMOUS:
        response = client.post(
            "/admin/login/",
            {
                "username": w.users[role].username,
                "password": PASSWORD,
                "csrfmiddlewaretoken": csrf_of(page.content.decode()),
                "next": "/admin/",
            },
        )
        assert response.status_code == 302, f"{role} could not log in"
        page = client.get("/admin/")  # its logout button is a form with the token
    return client, csrf_of(page.content.decode())


def api_client(w, role: str) -> APIClient:
    client = APIClient()
    if role != ANONYMOUS:
        client.credentials(HTTP_AUTHORIZATION=f"Token {w.tokens[role]}")
    return client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


class _FormParser(HTMLParser):
    """The values a browser would submit from the page's main form (the admin's change form:
    inputs, ticked boxes, selected options, textareas)."""

    def __init__(self):
        super().__init__()
        self.data: dict[str, list[str]] = {}
        self._select = None
        self._textarea = None
        self._textarea_text = False
        self._option = None

    def _add(self, name, value):
        self.data.setdefault(name, []).append(value)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("submit", "button", "image", "file", "reset"):
                return
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            self._add(name, a.get("value", "on" if kind == "checkbox" else ""))
        elif tag == "select" and name:
            self._select, self._option = name, None
            self._first, self._multiple = None, "multiple" in a
        elif tag == "option" and self._select:
            value = a.get("value", "")
            if self._first is None:
                self._first = value
            if "selected" in a:
                self._add(self._select, value)
                self._option = value
        elif tag == "textarea" and name:
            self._textarea = name
            # django-jsonform's editor keeps the value in an attribute; its script fills the
            # textarea when the form is submitted, as this does.
            editor = a.get("data-django-jsonform")
            self._add(name, json.loads(editor)["data"] if editor else "")
            self._textarea_text = not editor

    def handle_data(self, data):
        if self._textarea and self._textarea_text:
            self.data[self._textarea][-1] += data

    def handle_endtag(self, tag):
        if tag == "select" and self._select:
            if self._option is None and self._first is not None and not self._multiple:
                self._add(self._select, self._first)  # a browser sends the first option
            self._select = None
        elif tag == "textarea":
            if self._textarea and self.data[self._textarea][-1].startswith("\n"):
                self.data[self._textarea][-1] = self.data[self._textarea][-1][1:]
            self._textarea = None


def form_values(html: str, form_id: str) -> dict:
    """The values of the form `form_id` (a list for a repeated name), without its CSRF token."""
    match = re.search(rf'<form[^>]*id="{form_id}"', html)
    assert match, f"no form {form_id} on the page"
    start = match.start()
    end = html.find("</form>", start)
    parser = _FormParser()
    parser.feed(html[start:end])
    data = {k: v if len(v) > 1 else v[0] for k, v in parser.data.items()}
    data.pop("csrfmiddlewaretoken", None)
    return data


def media_files(root) -> dict:
    """The uploaded files (an import's CSV): a cell may delete one (discarding an import),
    which no rollback brings back."""
    from pathlib import Path

    return {path: path.read_bytes() for path in Path(root).rglob("*") if path.is_file()}


def restore_media(files: dict) -> None:
    for path, content in files.items():
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)


def snapshot_tables() -> list[str]:
    tables = []
    for app_label in SNAPSHOT_APPS:
        for model in apps.get_app_config(app_label).get_models(include_auto_created=True):
            if not model._meta.proxy and model._meta.managed:
                tables.append(model._meta.db_table)
    return sorted(set(tables))


def db_snapshot(tables: list[str]) -> dict[str, list]:
    """Every row of every table, in a fixed order: a denied request must change none.

    PostgreSQL answers in one statement (each table's rows as JSON), a round trip instead
    of fifty; SQLite in memory reads each table."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                " UNION ALL ".join(
                    f"SELECT %s, (SELECT COALESCE(json_agg(r ORDER BY r::text), '[]')::text "
                    f"FROM {quote(table)} r)"
                    for table in tables
                ),
                tables,
            )
            return {table: json.loads(rows) for table, rows in cursor.fetchall()}
        snapshot = {}
        for table in tables:
            cursor.execute(f"SELECT * FROM {quote(table)} ORDER BY 1")
            snapshot[table] = cursor.fetchall()
        return snapshot


def snapshot_difference(before: dict, after: dict) -> list[str]:
    return [table for table in before if before[table] != after[table]]
