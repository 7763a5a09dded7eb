from django.db import migrations


def sync(apps, schema_editor):
    from crm.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    """The roles as the permission matrix (docs/PERMISSIONS.md) left them: Marketing ops may
    view the account (its form defaults) and delete unused sources, Sales may discard an
    import that never ran, Billing admin loses contacts.change_pendingapproval (unused)."""

    dependencies = [
        ("crm", "0012_roles_approvals"),
        ("contacts", "0013_pendingapproval"),
        ("workflows", "0003_workflows"),
        ("billing", "0004_guardrails_moved"),
    ]

    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
