from django.db import migrations


def set_fillfactor(apps, schema_editor):
    # Status changes rewrite rows in place; free room on each page lets PostgreSQL keep the
    # new version on the same page (a HOT update when no indexed column changes).
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE contacts_contact SET (fillfactor = 85)")


def reset_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE contacts_contact RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("contacts", "0001_initial")]

    operations = [migrations.RunPython(set_fillfactor, reset_fillfactor)]
