from django.db import migrations


def sync(apps, schema_editor):
    from crm.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0007_roles_comms"),
        ("workflows", "0001_hygiene"),
    ]

    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
