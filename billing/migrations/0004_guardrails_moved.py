"""The guardrails' settings now live on the account and the held changes in contacts."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0003_guardrail_approvals"),
        ("crm", "0011_account_guardrails"),
        ("contacts", "0013_pendingapproval"),
    ]

    operations = [
        migrations.RemoveField(model_name="subscription", name="hard_cap"),
        migrations.RemoveField(model_name="subscription", name="operation_limit"),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="PendingApproval")]
        ),
    ]
