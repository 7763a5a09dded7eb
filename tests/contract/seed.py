"""Objects for the contract suite to find: one of each kind an API path names by id."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.utils import timezone

from billing.models import Invoice
from billing.services import billing_close_periods, billing_finalise_invoices
from contacts.imports.services import contact_import_create, contact_import_preview
from contacts.intake.models import Chatflow, Form
from contacts.intake.services import (
    ad_account_create,
    chatflow_save,
    connected_app_create,
    form_save,
)
from contacts.outreach.models import AdAudience, ContactList
from contacts.outreach.services import communication_send, marketing_email_create
from contacts.status.results import StatusSource
from contacts.status.services import contacts_set_marketing, contacts_set_non_marketing
from tests.factories import ContactFactory, SourceFactory
from workflows.models import ScoringRule
from workflows.runs import workflow_run_now
from workflows.services import workflow_create

SEED_SOURCE = StatusSource("manual", name="contract suite")


@dataclass(frozen=True)
class Seeded:
    """The ids (and the slug, number and tokens) of the seeded objects."""

    ids: dict[str, int]
    form_slug: str
    invoice_number: str
    app_token: str
    ad_token: str


def _close_last_period() -> None:
    """A closed period with its invoice: marketing contacts from last month, then the close."""
    now = timezone.now()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = month_start - dt.timedelta(days=20)
    old = ContactFactory.create_batch(2, source=SourceFactory(name="Old import", kind="import"))
    contacts_set_marketing(contacts=[c.pk for c in old], source=SEED_SOURCE, at=last_month)
    billing_close_periods(as_of=month_start, at=month_start + dt.timedelta(hours=1))
    billing_finalise_invoices(at=now)


def seed_api_objects(*, actor) -> Seeded:
    _close_last_period()
    source = SourceFactory(name="Manual", kind="manual")
    contact = ContactFactory(source=source, lifecycle_stage="mql")
    other = ContactFactory(source=source)
    contacts_set_marketing(contacts=[contact.pk], source=SEED_SOURCE)
    contacts_set_non_marketing(contacts=[contact.pk], source=SEED_SOURCE)  # a pending downgrade

    form = form_save(form=Form(name="Newsletter", slug="newsletter"))
    chatflow = chatflow_save(chatflow=Chatflow(name="Pricing bot"))
    app, app_token = connected_app_create(name="Shop")
    ad_account, ad_token = ad_account_create(name="Ads", platform="facebook")

    contact_list = ContactList.objects.create(name="VIP")
    audience = AdAudience.objects.create(name="Lookalike", platform="facebook")
    email = marketing_email_create(
        name="Launch",
        subject="Hello",
        body="News. Unsubscribe: {unsubscribe_url}",
        audience_list=contact_list,
    )
    communication = communication_send(
        contact=other, type="sales_email", subject="Hi", body="A note.", actor=actor
    )
    rule = ScoringRule.objects.create(name="Opens", event_type="email_open", points=5)
    workflow = workflow_create(
        name="MQL definition",
        criteria={
            "filterGroups": [
                {"filters": [{"propertyName": "lifecycle_stage", "operator": "EQ", "value": "mql"}]}
            ]
        },
        actions=[{"type": "set_marketing"}],
        max_new_marketing=0,
    )
    held_run = workflow_run_now(workflow=workflow)  # held: past its limit of 0
    contact_import = contact_import_create(
        file=ContentFile(b"email,first_name\nnew@example.com,New\nnot-an-email,Bad\n"),
        file_name="people.csv",
        actor=actor,
    )
    contact_import = contact_import_preview(contact_import=contact_import, actor=actor)
    invoice = Invoice.objects.order_by("-id").first()
    return Seeded(
        ids={
            "contact": contact.pk,
            "source": source.pk,
            "form": form.pk,
            "chatflow": chatflow.pk,
            "app": app.pk,
            "ad_account": ad_account.pk,
            "contact_list": contact_list.pk,
            "audience": audience.pk,
            "email": email.pk,
            "communication": communication.pk,
            "rule": rule.pk,
            "workflow": workflow.pk,
            "run": held_run.pk,
            "import": contact_import.pk,
            "period": invoice.period_id,
        },
        form_slug=form.slug,
        invoice_number=invoice.number,
        app_token=app_token,
        ad_token=ad_token,
    )
