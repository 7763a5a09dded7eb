from django.db import migrations


def sync(apps, schema_editor):
    from crm.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0004_account_intake"),
        ("contacts", "0005_merge"),
    ]

    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
