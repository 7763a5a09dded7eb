from django.db import migrations, models


def blank_to_null(apps, schema_editor):
    Contact = apps.get_model("contacts", "Contact")
    Contact.objects.filter(marketing_reason_type="").update(marketing_reason_type=None)


def null_to_blank(apps, schema_editor):
    Contact = apps.get_model("contacts", "Contact")
    Contact.objects.filter(marketing_reason_type=None).update(marketing_reason_type="")


class Migration(migrations.Migration):
    """A contact without a reason has a null reason type, not "" (outside the type's choices)."""

    dependencies = [
        ("contacts", "0015_import_lease"),
    ]

    operations = [
        migrations.AlterField(
            model_name="contact",
            name="marketing_reason_type",
            field=models.CharField(
                blank=True,
                choices=[
                    ("manual", "Person (contact page)"),
                    ("bulk_action", "Bulk action"),
                    ("api", "API"),
                    ("creation", "Contact creation"),
                    ("workflow", "Workflow"),
                    ("import", "Import"),
                    ("form", "Form"),
                    ("integration", "Integration"),
                    ("chatflow", "Chatflow"),
                    ("ads", "Ads"),
                    ("rotation", "Rotation"),
                    ("hygiene", "Hygiene policy"),
                    ("rollover", "Period rollover"),
                    ("deletion", "Deletion"),
                    ("seed", "Demo data"),
                ],
                editable=False,
                max_length=20,
                null=True,
            ),
        ),
        migrations.RunPython(blank_to_null, null_to_blank, elidable=True),
    ]
