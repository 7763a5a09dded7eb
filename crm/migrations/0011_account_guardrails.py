"""The guardrails (hard cap, per-operation limit) move from the subscription to the account:
the status service checks them under the usage lock in contacts, which reads the account."""

from django.db import migrations, models


def copy_from_subscription(apps, schema_editor):
    Subscription = apps.get_model("billing", "Subscription")
    Account = apps.get_model("crm", "Account")
    subscription = Subscription.objects.order_by("pk").first()
    if subscription is not None:
        Account.objects.filter(pk=1).update(
            hard_cap=subscription.hard_cap, operation_limit=subscription.operation_limit
        )


class Migration(migrations.Migration):
    dependencies = [
        ("crm", "0010_roles_workflows"),
        ("billing", "0003_guardrail_approvals"),
    ]

    operations = [
        migrations.AddField(
            model_name="account",
            name="hard_cap",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Optional: an operation that would take the billable count past this waits for approval.",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="account",
            name="operation_limit",
            field=models.PositiveIntegerField(
                blank=True,
                default=10000,
                help_text="An operation that would make more new marketing contacts than this waits for approval.",
                null=True,
            ),
        ),
        migrations.RunPython(copy_from_subscription, migrations.RunPython.noop),
    ]
