"""The held changes move from billing to contacts (same table): the guardrails are now
checked under the usage lock by the status service. The pickled query goes: a held change
names its contacts by id."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('contacts', '0012_engagement_one_index'),
        ('billing', '0003_guardrail_approvals'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.CreateModel(
            name='PendingApproval',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('idempotency_key', models.CharField(max_length=200, unique=True)),
                ('operation', models.CharField(max_length=32)),
                ('contact_ids', models.JSONField(blank=True, help_text='The contacts it would make marketing, by id.', null=True)),
                ('contact_query', models.BinaryField(blank=True, null=True)),
                ('source_type', models.CharField(max_length=20)),
                ('source_id', models.CharField(blank=True, max_length=64)),
                ('source_name', models.CharField(blank=True, max_length=200)),
                ('requested_at', models.DateTimeField()),
                ('new_marketing', models.PositiveIntegerField(help_text='Contacts it would make marketing.')),
                ('live_after', models.PositiveIntegerField()),
                ('cost', models.JSONField(default=dict)),
                ('reason', models.CharField(max_length=300)),
                ('status', models.CharField(choices=[('pending', 'Waiting for approval'), ('approved', 'Approved and run'), ('rejected', 'Rejected'), ('failed', 'Approved, but the change failed')], default='pending', max_length=10)),
                ('decided_at', models.DateTimeField(blank=True, null=True)),
                ('result', models.JSONField(blank=True, default=dict)),
                ('decided_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('requested_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'db_table': 'billing_pendingapproval',
                'ordering': ['-requested_at'],
            },
        )]),
        migrations.RemoveField(model_name='pendingapproval', name='contact_query'),
        migrations.AddField(
            model_name='pendingapproval',
            name='fingerprint',
            field=models.CharField(blank=True, default='', max_length=64),
        ),
    ]
