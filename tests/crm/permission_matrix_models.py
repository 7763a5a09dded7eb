"""The role matrix's rows for every registered ModelAdmin: list, add, change, delete, and
Django's "Delete selected" where it is offered (tests/crm/permission_matrix.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.crm.permission_rows import (
    ADMIN,
    AUDITOR,
    BILLING,
    NOBODY,
    OPS,
    SALES,
    SU,
    VIEWERS_OF_CONTACTS,
    Row,
    contains,
    csv_upload,
    expect,
    gone,
    model_of,
    one_more,
    refreshed,
    who,
)


@dataclass(frozen=True)
class AdminModel:
    """A registered ModelAdmin's four rows: list, add, change and delete."""

    label: str
    area: str
    view: frozenset[str]
    add: frozenset[str] = NOBODY
    change: frozenset[str] = NOBODY
    delete: frozenset[str] = NOBODY
    obj: Callable[[Any], Any] | None = None
    delete_obj: Callable[[Any], Any] | None = None
    add_data: Callable[[Any], dict] = lambda w: {}
    change_data: Callable[[Any], dict] = lambda w: {}
    changed: Callable[[Any, Any], bool] | None = None
    list_ok: int = 200
    # The object's id in the admin's URLs, and the add page's form.
    ref: Callable[[Any], Any] = lambda obj: obj.pk
    add_form_id: str = ""
    # Django's "Delete selected" action is offered (those with the delete permission).
    bulk_delete: bool = False
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def app_label(self) -> str:
        return self.label.split(".")[0]

    @property
    def model_name(self) -> str:
        return self.label.split(".")[1]


# Every registered ModelAdmin.

ADMIN_MODELS = [
    AdminModel(
        "auth.user",
        "Staff",
        bulk_delete=True,
        view=SU,
        add=SU,
        change=SU,
        delete=SU,
        obj=lambda w: w.spare_user,
        add_data=lambda w: {
            "username": "newcomer",
            "password1": "A-long-pass-1234",
            "password2": "A-long-pass-1234",
            "usable_password": "true",
        },
        change_data=lambda w: {"first_name": "Spare"},
        changed=lambda w, o: o.first_name == "Spare",
    ),
    AdminModel(
        "auth.group",
        "Staff",
        bulk_delete=True,
        view=SU,
        add=SU,
        change=SU,
        delete=SU,
        obj=lambda w: w.spare_group,
        add_data=lambda w: {"name": "New group"},
        change_data=lambda w: {"name": "Renamed group"},
        changed=lambda w, o: o.name == "Renamed group",
    ),
    AdminModel(
        "authtoken.tokenproxy",
        "Staff",
        view=SU,
        add=SU,
        delete=SU,
        change=SU,
        obj=lambda w: w.spare_token,
        ref=lambda token: token.user_id,
        add_data=lambda w: {"user": str(w.tokenless_user.pk)},
        change_data=lambda w: {"user": str(w.tokenless_user.pk)},
        changed=lambda w, o: o.user_id == w.tokenless_user.pk,
    ),
    AdminModel(
        "crm.account",
        "Account",
        view=who(OPS, BILLING, AUDITOR),
        change=who(BILLING),
        obj=lambda w: w.account,
        change_data=lambda w: {"name": "Renamed account"},
        changed=lambda w, o: o.name == "Renamed account",
        list_ok=302,
        notes={"add": "nobody: one account", "delete": "nobody: one account"},
    ),
    AdminModel(
        "contacts.contact",
        "Contacts",
        view=VIEWERS_OF_CONTACTS,
        add=who(OPS, SALES),
        change=who(OPS, SALES),
        delete=who(OPS),
        obj=lambda w: w.bob,
        delete_obj=lambda w: w.ann,
        add_data=lambda w: {"email": "added@example.com"},
        change_data=lambda w: {"first_name": "Robert"},
        changed=lambda w, o: o.first_name == "Robert",
        notes={"add": "add_contact; marketing only with change_marketing_status"},
    ),
    AdminModel(
        "contacts.source",
        "Contacts",
        view=VIEWERS_OF_CONTACTS,
        add=who(OPS),
        change=who(OPS),
        delete=who(OPS),
        obj=lambda w: w.unused_source,
        add_data=lambda w: {"name": "New source", "kind": "manual"},
        change_data=lambda w: {"name": "Renamed source"},
        changed=lambda w, o: o.name == "Renamed source",
    ),
    AdminModel(
        "contacts.statuschange",
        "Status ledger and usage",
        view=VIEWERS_OF_CONTACTS,
        obj=lambda w: model_of("contacts.statuschange").objects.first(),
    ),
    AdminModel(
        "contacts.bulkstatusjob",
        "Status ledger and usage",
        view=who(OPS, BILLING, AUDITOR),
        obj=lambda w: w.bulk_job,
        notes={
            "add": "nobody: a bulk action over all matching starts one (change_marketing_status)"
        },
    ),
    AdminModel(
        "contacts.statuschangerequest",
        "Status ledger and usage",
        view=who(AUDITOR),
        obj=lambda w: model_of("contacts.statuschangerequest").objects.first(),
    ),
    AdminModel(
        "contacts.periodusage",
        "Status ledger and usage",
        view=who(OPS, BILLING, AUDITOR),
        obj=lambda w: model_of("contacts.periodusage").objects.first(),
    ),
    AdminModel(
        "contacts.pendingapproval",
        "Billing",
        view=who(OPS, BILLING, AUDITOR),
        obj=lambda w: w.approval,
    ),
    AdminModel(
        "contacts.form",
        "Intake",
        view=who(OPS, AUDITOR),
        add=who(OPS),
        change=who(OPS),
        delete=SU,
        obj=lambda w: w.form,
        delete_obj=lambda w: w.spare_form,
        add_data=lambda w: {"name": "Webinar", "slug": "webinar", "fields": "[]"},
        change_data=lambda w: {"name": "Newsletter (renamed)"},
        changed=lambda w, o: o.name == "Newsletter (renamed)",
    ),
    AdminModel(
        "contacts.formsubmission",
        "Intake",
        view=who(OPS, AUDITOR),
        obj=lambda w: model_of("contacts.formsubmission").objects.first(),
    ),
    AdminModel(
        "contacts.chatflow",
        "Intake",
        bulk_delete=True,
        view=who(OPS, AUDITOR),
        add=who(OPS),
        change=who(OPS),
        delete=SU,
        obj=lambda w: w.chatflow,
        delete_obj=lambda w: w.spare_chatflow,
        add_data=lambda w: {"name": "Support bot"},
        change_data=lambda w: {"name": "Sales bot"},
        changed=lambda w, o: o.name == "Sales bot",
    ),
    AdminModel(
        "contacts.connectedapp",
        "Intake",
        view=who(OPS, AUDITOR),
        add=who(OPS),
        change=who(OPS),
        delete=SU,
        obj=lambda w: w.app,
        delete_obj=lambda w: w.spare_app,
        add_data=lambda w: {"name": "CRM sync"},
        change_data=lambda w: {"name": "Shop (renamed)"},
        changed=lambda w, o: o.name == "Shop (renamed)",
    ),
    AdminModel(
        "contacts.adaccount",
        "Intake",
        view=who(OPS, AUDITOR),
        add=who(OPS),
        change=who(OPS),
        delete=SU,
        obj=lambda w: w.ad_account,
        delete_obj=lambda w: w.spare_ad_account,
        add_data=lambda w: {"name": "LinkedIn ads", "platform": "linkedin"},
        change_data=lambda w: {"name": "Ads (renamed)"},
        changed=lambda w, o: o.name == "Ads (renamed)",
    ),
    AdminModel(
        "contacts.adlead",
        "Intake",
        view=who(OPS, AUDITOR),
        obj=lambda w: model_of("contacts.adlead").objects.first(),
    ),
    AdminModel(
        "contacts.contactimport",
        "Imports",
        view=who(OPS, SALES, AUDITOR),
        add=who(OPS, SALES),
        delete=who(OPS, SALES),
        obj=lambda w: w.contact_import,
        add_data=lambda w: {"file": csv_upload()},
        add_form_id="import-upload-form",
        notes={
            "add": "add_contactimport (“set all as marketing”, or keeping a HubSpot export's statuses, "
            "also change_marketing_status)",
            "change": "nobody: an import changes only through its steps",
            "delete": "delete_contactimport, before it ran",
        },
    ),
    AdminModel(
        "contacts.engagementevent",
        "Engagement and scoring",
        view=who(OPS, AUDITOR),
        obj=lambda w: model_of("contacts.engagementevent").objects.first(),
    ),
    AdminModel(
        "contacts.marketingemail",
        "Outreach",
        bulk_delete=True,
        view=who(OPS, AUDITOR),
        add=who(OPS),
        change=who(OPS),
        delete=who(OPS),
        obj=lambda w: w.email,
        delete_obj=lambda w: w.spare_email,
        add_data=lambda w: {
            "name": "Summer news",
            "subject": "Summer",
            "body": "Hi. {unsubscribe_url}",
            "audience_filter": '{"lifecycle_stage": "mql"}',
        },
        change_data=lambda w: {"subject": "Spring, again"},
        changed=lambda w, o: o.subject == "Spring, again",
        notes={"change": "change_marketingemail, while a draft"},
    ),
    AdminModel(
        "contacts.emailsend",
        "Outreach",
        view=who(OPS, AUDITOR),
        obj=lambda w: model_of("contacts.emailsend").objects.first(),
    ),
    AdminModel(
        "contacts.unsubscription",
        "Outreach",
        view=who(OPS, AUDITOR),
        obj=lambda w: model_of("contacts.unsubscription").objects.first(),
    ),
    AdminModel(
        "contacts.contactlist",
        "Outreach",
        bulk_delete=True,
        view=who(OPS, AUDITOR),
        add=who(OPS),
        change=who(OPS),
        delete=who(OPS),
        obj=lambda w: w.contact_list,
        delete_obj=lambda w: w.spare_list,
        add_data=lambda w: {"name": "Partners"},
        change_data=lambda w: {"name": "VIPs (renamed)"},
        changed=lambda w, o: o.name == "VIPs (renamed)",
    ),
    AdminModel(
        "contacts.adaudience",
        "Outreach",
        bulk_delete=True,
        view=who(OPS, AUDITOR),
        add=who(OPS),
        change=who(OPS),
        delete=who(OPS),
        obj=lambda w: w.audience,
        delete_obj=lambda w: w.spare_audience,
        add_data=lambda w: {"name": "Retargeting", "platform": "google"},
        change_data=lambda w: {"name": "Lookalikes (renamed)"},
        changed=lambda w, o: o.name == "Lookalikes (renamed)",
    ),
    AdminModel(
        "contacts.communication",
        "Outreach",
        view=who(OPS, SALES, AUDITOR),
        add=who(SALES),
        obj=lambda w: w.communication,
        add_data=lambda w: {
            "contact": str(w.bob.pk),
            "type": "transactional",
            "subject": "Your receipt",
            "body": "Thanks.",
        },
        notes={"add": "add_communication (adding one sends it)"},
    ),
    AdminModel(
        "workflows.workflow",
        "Workflows",
        bulk_delete=True,
        view=who(OPS, BILLING, AUDITOR),
        add=who(OPS),
        change=who(OPS),
        delete=who(OPS),
        obj=lambda w: w.big_workflow,
        delete_obj=lambda w: w.workflow,
        add_data=lambda w: {
            "name": "Customers",
            "criteria": '{"filterGroups": [{"filters": [{"propertyName": "lifecycle_stage", '
            '"operator": "EQ", "value": "customer"}]}]}',
            "actions": '[{"type": "set_marketing"}]',
        },
        change_data=lambda w: {"name": "All leads (renamed)"},
        changed=lambda w, o: o.name == "All leads (renamed)",
        notes={"delete": "delete_workflow (its runs and enrollments go with it)"},
    ),
    AdminModel(
        "workflows.workflowrun",
        "Workflows",
        view=who(OPS, BILLING, AUDITOR),
        obj=lambda w: w.run,
    ),
    AdminModel(
        "workflows.enrollment",
        "Workflows",
        view=who(OPS, AUDITOR),
        obj=lambda w: model_of("workflows.enrollment").objects.first(),
    ),
    AdminModel(
        "workflows.scoringrule",
        "Engagement and scoring",
        bulk_delete=True,
        view=who(OPS, AUDITOR),
        add=who(OPS),
        change=who(OPS),
        delete=who(OPS),
        obj=lambda w: w.scoring_rule,
        delete_obj=lambda w: w.spare_rule,
        add_data=lambda w: {"name": "Meetings", "event_type": "meeting_booked", "points": "20"},
        change_data=lambda w: {"points": "7"},
        changed=lambda w, o: o.points == 7,
    ),
    AdminModel(
        "workflows.hygienepolicy",
        "Hygiene, rotation, savings",
        bulk_delete=True,
        view=who(OPS, AUDITOR),
        add=who(OPS),
        change=who(OPS),
        delete=who(OPS),
        obj=lambda w: w.policy,
        delete_obj=lambda w: w.spare_policy,
        add_data=lambda w: {"name": "Bounced out", "criteria": '{"filterGroups": []}'},
        change_data=lambda w: {"name": "Unsubscribed out (renamed)"},
        changed=lambda w, o: o.name == "Unsubscribed out (renamed)",
        notes={
            "add": "add_hygienepolicy and change_marketing_status",
            "change": "change_hygienepolicy and change_marketing_status",
        },
    ),
    AdminModel(
        "workflows.hygienerun",
        "Hygiene, rotation, savings",
        view=who(OPS, AUDITOR),
        obj=lambda w: w.hygiene_run,
    ),
    AdminModel(
        "workflows.rotationplan",
        "Hygiene, rotation, savings",
        bulk_delete=True,
        view=who(OPS, AUDITOR),
        add=who(OPS),
        change=who(OPS),
        delete=who(OPS),
        obj=lambda w: w.idle_plan,
        delete_obj=lambda w: w.plan,
        add_data=lambda w: {
            "name": "Prospects C",
            "criteria": '{"filterGroups": []}',
            "size": "3",
            "rotate_per_period": "1",
        },
        change_data=lambda w: {"size": "2"},
        changed=lambda w, o: o.size == 2,
        notes={
            "add": "add_rotationplan and change_marketing_status",
            "change": "change_rotationplan and change_marketing_status",
            "delete": "delete_rotationplan (its runs and members go with it)",
        },
    ),
    AdminModel(
        "workflows.rotationrun",
        "Hygiene, rotation, savings",
        view=who(OPS, AUDITOR),
        obj=lambda w: model_of("workflows.rotationrun").objects.first(),
    ),
    AdminModel(
        "workflows.rotationmember",
        "Hygiene, rotation, savings",
        view=who(OPS, AUDITOR),
        obj=lambda w: model_of("workflows.rotationmember").objects.first(),
    ),
    AdminModel(
        "billing.subscription",
        "Billing",
        view=who(OPS, BILLING, AUDITOR),
        change=who(BILLING),
        obj=lambda w: w.subscription,
        change_data=lambda w: {"included_contacts": "5"},
        changed=lambda w, o: o.included_contacts == 5,
        list_ok=302,
        notes={"add": "nobody: one subscription", "delete": "nobody: one subscription"},
    ),
    AdminModel(
        "billing.billingperiod",
        "Billing",
        view=who(BILLING, AUDITOR),
        obj=lambda w: w.period,
    ),
    AdminModel(
        "billing.invoice",
        "Billing",
        view=who(BILLING, AUDITOR),
        obj=lambda w: w.invoice,
    ),
    AdminModel(
        "billing.alert",
        "Billing",
        view=who(OPS, BILLING, AUDITOR),
        obj=lambda w: w.alert,
    ),
    AdminModel(
        "billing.dailyusage",
        "Billing",
        view=who(BILLING, AUDITOR),
        obj=lambda w: model_of("billing.dailyusage").objects.first(),
    ),
]

SYSTEM_ROWS = "nobody: written by the system"


def crud_rows(spec: AdminModel) -> list[Row]:
    base = f"/admin/{spec.app_label}/{spec.model_name}/"
    name = spec.model_name

    def needs(op: str, allowed: frozenset[str]) -> str:
        if op in spec.notes:
            return spec.notes[op]
        if allowed == SU:
            return f"{op}_{name} (no role has it)"
        if not allowed:
            return SYSTEM_ROWS
        return f"{op}_{name}" if op != "view" else f"view_{name} or change_{name}"

    pick = spec.obj or (lambda w: None)
    to_delete = spec.delete_obj or pick
    label = spec.label
    return [
        Row(
            ADMIN,
            spec.area,
            f"{name}: list",
            "GET",
            base,
            spec.view,
            needs("view", spec.view),
            url=lambda w: base,
            ok=(spec.list_ok,),
            # A one-row model's list opens its row.
            effect=(lambda w, r: expect(r["Location"].endswith(f"/{spec.ref(pick(w))}/change/")))
            if spec.list_ok == 302
            else contains('id="changelist"'),
        ),
        Row(
            ADMIN,
            spec.area,
            f"{name}: add",
            "POST",
            base + "add/",
            spec.add,
            needs("add", spec.add),
            url=lambda w: base + "add/",
            data=spec.add_data,
            ok=(302,),
            effect=one_more(label),
            form_page=lambda w: base + "add/",
            form_id=spec.add_form_id or f"{name}_form",
        ),
        Row(
            ADMIN,
            spec.area,
            f"{name}: change",
            "POST",
            base + "{id}/change/",
            spec.change,
            needs("change", spec.change),
            url=lambda w: f"{base}{spec.ref(pick(w))}/change/",
            data=spec.change_data,
            ok=(302,),
            effect=(lambda w, r: expect(spec.changed(w, refreshed(pick)(w))))
            if spec.changed
            else None,
            form_page=lambda w: f"{base}{spec.ref(pick(w))}/change/",
            form_id=f"{name}_form",
        ),
        Row(
            ADMIN,
            spec.area,
            f"{name}: delete",
            "POST",
            base + "{id}/delete/",
            spec.delete,
            needs("delete", spec.delete),
            url=lambda w: f"{base}{spec.ref(to_delete(w))}/delete/",
            data=lambda w: {"post": "yes"},
            ok=(302,),
            effect=gone(label, to_delete),
        ),
    ]


def changelist_action(
    spec_label: str,
    area: str,
    action_name: str,
    description: str,
    allowed: frozenset[str],
    needs: str,
    selected: Callable[[Any], list],
    *,
    extra: Callable[[Any], dict] = lambda w: {},
    ok: tuple[int, ...] = (302,),
    effect=None,
) -> Row:
    app_label, model_name = spec_label.split(".")
    base = f"/admin/{app_label}/{model_name}/"
    viewers = next(spec.view for spec in ADMIN_MODELS if spec.label == spec_label)
    return Row(
        ADMIN,
        area,
        f"{model_name}: action “{description}”",
        "POST",
        base,
        allowed,
        needs,
        url=lambda w: base,
        data=lambda w: {
            "action": action_name,
            "_selected_action": [str(obj.pk) for obj in selected(w)],
            "index": "0",
            **extra(w),
        },
        ok=ok,
        effect=effect,
        action_name=action_name,
        viewers=viewers,
    )


def bulk_delete_rows(spec: AdminModel) -> list[Row]:
    if not spec.bulk_delete:
        return []
    to_delete = spec.delete_obj or spec.obj
    return [
        changelist_action(
            spec.label,
            spec.area,
            "delete_selected",
            "Delete selected",
            spec.delete,
            f"delete_{spec.model_name}" if spec.delete != SU else "(no role has it)",
            lambda w: [to_delete(w)],
            extra=lambda w: {"post": "yes"},
            effect=gone(spec.label, to_delete),
        )
    ]
