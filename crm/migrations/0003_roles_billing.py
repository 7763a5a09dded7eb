from django.db import migrations


def sync(apps, schema_editor):
    from crm.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0002_roles"),
        ("billing", "0003_guardrail_approvals"),
    ]

    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
