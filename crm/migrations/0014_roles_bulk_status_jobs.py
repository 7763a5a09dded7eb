from django.db import migrations


def sync(apps, schema_editor):
    from crm.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    """Marketing ops and Billing admin may view bulk status changes run in the background
    (Auditors view everything of contacts)."""

    dependencies = [
        ("crm", "0013_roles_matrix"),
        ("contacts", "0019_bulk_status_jobs"),
    ]

    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
