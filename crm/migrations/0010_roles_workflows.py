from django.db import migrations


def sync(apps, schema_editor):
    from crm.roles import sync_roles

    sync_roles(apps)


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0009_roles_scoring"),
        ("workflows", "0003_workflows"),
    ]

    operations = [migrations.RunPython(sync, migrations.RunPython.noop)]
