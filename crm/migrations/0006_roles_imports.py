from django.db import migrations


def sync(apps, schema_editor):
    from crm.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0005_roles_intake"),
        ("contacts", "0006_imports"),
    ]

    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
