"""A form submission's client id is unique per form, not across forms.

The old `submission_key` ("form:<form id>:<id>" or "external:<id>") was unique across
every form, so an external form sent an id already used by another external form was
taken for a retry and its contact never stored. The client's id moves to
`submission_id`, unique with the form it was sent to: `form` for ours, `external_form`
for an external one. Every stored key keeps its id (the old uniqueness was stricter, so
no stored pair can collide).
"""

from django.db import migrations, models

# The id after the key's prefix: "external:" (9 characters), or "form:<form id>:".
COPY_ID = """
    UPDATE contacts_formsubmission SET submission_id = CASE
        WHEN form_id IS NULL THEN substr(submission_key, 10)
        ELSE substr(submission_key, 7 + length(CAST(form_id AS TEXT)))
    END
    WHERE submission_key IS NOT NULL
"""
COPY_KEY = """
    UPDATE contacts_formsubmission SET submission_key = CASE
        WHEN form_id IS NULL THEN 'external:' || submission_id
        ELSE 'form:' || CAST(form_id AS TEXT) || ':' || submission_id
    END
    WHERE submission_id <> ''
"""


class Migration(migrations.Migration):

    dependencies = [
        ('contacts', '0013_pendingapproval'),
    ]

    operations = [
        migrations.AddField(
            model_name='formsubmission',
            name='submission_id',
            field=models.CharField(blank=True, default='', max_length=100),
        ),
        migrations.RunSQL(COPY_ID, reverse_sql=COPY_KEY),
        migrations.RemoveField(
            model_name='formsubmission',
            name='submission_key',
        ),
        migrations.AddConstraint(
            model_name='formsubmission',
            constraint=models.UniqueConstraint(condition=models.Q(('form__isnull', False), models.Q(('submission_id', ''), _negated=True)), fields=('form', 'submission_id'), name='formsubmission_once_per_form'),
        ),
        migrations.AddConstraint(
            model_name='formsubmission',
            constraint=models.UniqueConstraint(condition=models.Q(('form__isnull', True), models.Q(('submission_id', ''), _negated=True)), fields=('external_form', 'submission_id'), name='formsubmission_once_per_external_form'),
        ),
    ]
