"""The staff roles, as Django groups with model permissions.

Migrations call `sync_roles` so the groups exist on every database; later
migrations call it again when new models bring new permissions.
"""

from crm.rows import row_get_or_create

MARKETING_OPS = "Marketing ops"
SALES = "Sales"
BILLING_ADMIN = "Billing admin"
AUDITOR = "Auditor"

ROLE_PERMISSIONS: dict[str, list[str]] = {
    MARKETING_OPS: [
        "contacts.view_contact",
        "contacts.add_contact",
        "contacts.change_contact",
        "contacts.delete_contact",
        "contacts.change_marketing_status",
        "contacts.view_source",
        "contacts.add_source",
        "contacts.change_source",
        # an unused source only: one that contacts record cannot be deleted
        "contacts.delete_source",
        "contacts.view_statuschange",
        "contacts.view_periodusage",
        # bulk status changes run in the background (starting one needs the status permission)
        "contacts.view_bulkstatusjob",
        # the account's form defaults, which the forms' "follows the account" points to
        "crm.view_account",
        "billing.view_subscription",
        "billing.view_alert",
        "contacts.view_pendingapproval",
        # communications: marketing email, audiences, lists (the send guard applies)
        "contacts.view_marketingemail",
        "contacts.add_marketingemail",
        "contacts.change_marketingemail",
        "contacts.delete_marketingemail",
        "contacts.send_marketingemail",
        "contacts.view_emailsend",
        "contacts.view_unsubscription",
        "contacts.view_contactlist",
        "contacts.add_contactlist",
        "contacts.change_contactlist",
        "contacts.delete_contactlist",
        "contacts.view_adaudience",
        "contacts.add_adaudience",
        "contacts.change_adaudience",
        "contacts.delete_adaudience",
        "contacts.view_communication",
        # imports
        "contacts.view_contactimport",
        "contacts.add_contactimport",
        "contacts.delete_contactimport",
        "contacts.view_importrowerror",
        # intake: forms, chatflows, connected apps, ad accounts
        "contacts.view_form",
        "contacts.add_form",
        "contacts.change_form",
        "contacts.view_formsubmission",
        "contacts.view_chatflow",
        "contacts.add_chatflow",
        "contacts.change_chatflow",
        "contacts.view_connectedapp",
        "contacts.add_connectedapp",
        "contacts.change_connectedapp",
        "contacts.view_adaccount",
        "contacts.add_adaccount",
        "contacts.change_adaccount",
        "contacts.view_adlead",
        # hygiene, rotation, savings
        "workflows.view_hygienepolicy",
        "workflows.add_hygienepolicy",
        "workflows.change_hygienepolicy",
        "workflows.delete_hygienepolicy",
        "workflows.view_hygienerun",
        "workflows.add_hygienerun",
        "workflows.view_rotationplan",
        "workflows.add_rotationplan",
        "workflows.change_rotationplan",
        "workflows.delete_rotationplan",
        "workflows.view_rotationrun",
        "workflows.view_rotationmember",
        "workflows.view_savings",
        # engagement events (ingested through the API) and scoring rules
        "contacts.view_engagementevent",
        "contacts.add_engagementevent",
        "workflows.view_scoringrule",
        "workflows.add_scoringrule",
        "workflows.change_scoringrule",
        "workflows.delete_scoringrule",
        # workflows: manage, preview and run them; runs and enrollments are read-only
        "workflows.view_workflow",
        "workflows.add_workflow",
        "workflows.change_workflow",
        "workflows.delete_workflow",
        "workflows.run_workflow",
        "workflows.view_workflowrun",
        "workflows.view_enrollment",
    ],
    SALES: [
        "contacts.view_contact",
        "contacts.add_contact",
        "contacts.change_contact",
        "contacts.view_source",
        "contacts.view_statuschange",
        # imports (never marketing: Sales lacks contacts.change_marketing_status), and
        # discarding one that never ran
        "contacts.view_contactimport",
        "contacts.add_contactimport",
        "contacts.delete_contactimport",
        # non-marketing communication (one-to-one, transactional…), never marketing email
        "contacts.view_communication",
        "contacts.add_communication",
    ],
    BILLING_ADMIN: [
        "contacts.view_contact",
        "contacts.view_source",
        "contacts.view_statuschange",
        "contacts.view_periodusage",
        "contacts.view_bulkstatusjob",
        "view:billing",
        "billing.change_subscription",
        "billing.change_alert",
        # held changes: approved or rejected with billing.approve_overage (the page is read-only)
        "contacts.view_pendingapproval",
        "billing.approve_overage",
        # held workflow runs: approve (past the per-run limit or billing's guardrails) or reject
        "workflows.view_workflow",
        "workflows.view_workflowrun",
        "workflows.approve_run",
        "crm.view_account",
        "crm.change_account",
        "workflows.view_savings",
    ],
    # Auditors read everything the apps hold and change nothing.
    AUDITOR: ["view:contacts", "view:billing", "view:crm", "view:workflows"],
}


def sync_roles(apps) -> None:
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = row_get_or_create(Group, lookup={"name": role})
        perms = []
        for name in names:
            if name.startswith("view:"):
                app_label = name.split(":", 1)[1]
                perms.extend(
                    Permission.objects.filter(
                        content_type__app_label=app_label, codename__startswith="view_"
                    )
                )
                continue
            app_label, codename = name.split(".", 1)
            perms.extend(
                Permission.objects.filter(content_type__app_label=app_label, codename=codename)
            )
        group.permissions.set(perms)
