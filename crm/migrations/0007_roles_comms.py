from django.db import migrations


def sync(apps, schema_editor):
    from crm.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0006_roles_imports"),
        ("contacts", "0007_comms"),
    ]

    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
