"""The public form a visitor fills in: one Django form class built from a `Form`'s settings.

The hosted page (/forms/<slug>/) renders and validates with it, and the public API
(POST /api/intake/forms/<slug>/) validates with the same class, so a field's rules and
its error messages are the same on both paths.
"""

from __future__ import annotations

from django import forms

from contacts.intake.models import Form
from contacts.intake.services import form_field_specs
from contacts.models import Contact

# A field no person sees (hidden by CSS) that simple bots fill in: the submission is
# answered like a success and nothing is stored.
HONEYPOT_FIELD = "website"
# The client's id for one submission: a retry with the same id stores nothing new.
SUBMISSION_ID_FIELD = "submission_id"
SUBMISSION_ID_MAX = 100


def honeypot_filled(data) -> bool:
    value = data.get(HONEYPOT_FIELD) if hasattr(data, "get") else None
    return bool(value) and bool(str(value).strip())


class SubmissionForm(forms.Form):
    """Base of the built classes: email first, the form's fields, consent, then the hidden ones."""

    email = forms.EmailField(max_length=254, label="Email")

    def __init__(self, *args, intake_form: Form, **kwargs):
        super().__init__(*args, **kwargs)
        self.intake_form = intake_form
        for spec in form_field_specs(intake_form):
            model_field = Contact._meta.get_field(spec["name"])
            label = (
                spec["label"] or model_field.verbose_name[:1].upper() + model_field.verbose_name[1:]
            )
            field = model_field.formfield(required=spec["required"], label=label)
            if isinstance(field, forms.TypedChoiceField) and spec["required"]:
                field.choices = [c for c in field.choices if c[0] != ""]
            self.fields[spec["name"]] = field
        if intake_form.consent_label:
            self.fields["consent"] = forms.BooleanField(
                required=intake_form.consent_required,
                label=intake_form.consent_label,
                error_messages={"required": "Please tick this box to send the form."},
            )
        self.fields[SUBMISSION_ID_FIELD] = forms.CharField(
            required=False, max_length=SUBMISSION_ID_MAX, widget=forms.HiddenInput
        )

    def contact_data(self) -> dict:
        """Email and the asked contact fields, cleaned (empty answers left out)."""
        names = ["email", *(spec["name"] for spec in form_field_specs(self.intake_form))]
        return {
            name: self.cleaned_data[name]
            for name in names
            if self.cleaned_data.get(name) not in ("", None)
        }

    def visible_fields_in_order(self):
        return [self[name] for name in self.fields if name != SUBMISSION_ID_FIELD]

    def error_dict(self) -> dict[str, list[str]]:
        """Errors by field, as the API answers them ("non_field_errors" for the rest)."""
        return {
            ("non_field_errors" if name == "__all__" else name): list(errors)
            for name, errors in self.errors.items()
        }
