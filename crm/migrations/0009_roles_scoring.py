from django.db import migrations


def sync(apps, schema_editor):
    from crm.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0008_roles_hygiene"),
        ("workflows", "0002_scoring"),
    ]

    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
