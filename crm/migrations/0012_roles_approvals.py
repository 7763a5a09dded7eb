from django.db import migrations


def sync(apps, schema_editor):
    from crm.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0011_account_guardrails"),
        ("billing", "0004_guardrails_moved"),
    ]

    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
