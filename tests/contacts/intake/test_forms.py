"""Our own forms (service, public API, hosted page) and external forms (DESIGN §1.3)."""

import logging

import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.test import Client, override_settings
from rest_framework.test import APIClient

from contacts.engagement.models import EngagementEvent
from contacts.intake.models import (
    Form,
    FormSubmission,
)
from contacts.intake.services import (
    external_form_submit,
    form_save,
    form_submit,
)
from contacts.models import (
    Contact,
    SourceKind,
)
from contacts.services import contact_create
from contacts.status.models import StatusChange
from contacts.status.services import (
    contacts_set_marketing,
    contacts_set_non_marketing,
)
from tests.factories import SourceFactory

M, N = "marketing", "non_marketing"


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    cache.clear()
    yield
    cache.clear()


def make_form(**fields) -> Form:
    values = {
        "name": "Newsletter",
        "slug": "newsletter",
        "fields": [{"name": "first_name", "required": True}, {"name": "company"}],
    }
    values.update(fields)
    return form_save(form=Form(**values))


def ledger_rows():
    return list(
        StatusChange.objects.order_by("id").values_list(
            "contact__email", "action", "source_type", "source_id", "source_name"
        )
    )


def existing_contact(email="known@example.com", **fields):
    manual = SourceFactory(name="Manual", kind=SourceKind.MANUAL)
    return contact_create(email=email, source=manual, **fields)


def throttle_rates(**rates):
    return override_settings(
        REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    )


# --- the form and its source ------------------------------------------------------


def test_a_new_form_gets_its_own_source_of_kind_form(account):
    form = make_form()

    assert (form.source.kind, form.source.name, form.source.default_marketing) == (
        "form",
        "Form: Newsletter",
        True,
    )
    assert form.fields == [
        {"name": "first_name", "required": True, "label": ""},
        {"name": "company", "required": False, "label": ""},
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([{"name": "lead_score"}], "'lead_score' is not a contact field a form may ask"),
        ([{"name": "email"}], "email is always asked and required"),
        ([{"name": "phone"}, {"name": "phone"}], "'phone' is listed twice"),
        ([{"name": "phone", "required": "yes"}], '"required" must be true or false'),
        ([{"name": "phone", "colour": "red"}], "unknown keys colour"),
        ({"name": "phone"}, "Give a list"),
    ],
)
def test_form_fields_are_checked_against_the_askable_contact_fields(account, fields, message):
    with pytest.raises(ValidationError) as error:
        make_form(fields=fields)

    assert message in str(error.value.message_dict["fields"])
    assert Form.objects.count() == 0


# --- the service ------------------------------------------------------------------------


def test_a_form_creates_a_marketing_contact_by_default_with_the_form_in_the_ledger(account):
    form = make_form()

    result = form_submit(form=form, data={"email": "New@Example.com", "first_name": "Ann"})

    contact = Contact.objects.get()
    assert (contact.email, contact.first_name, contact.marketing_status) == (
        "new@example.com",
        "Ann",
        M,
    )
    assert contact.source_id == form.source_id
    assert (contact.marketing_reason_type, contact.marketing_reason_id) == ("form", str(form.pk))
    assert ledger_rows() == [("new@example.com", "upgrade", "form", str(form.pk), "Newsletter")]
    submission = FormSubmission.objects.get()
    assert (submission.form, submission.contact, submission.created_contact) == (
        form,
        contact,
        True,
    )
    assert submission.data == {"email": "New@Example.com", "first_name": "Ann"}
    assert result.intake.created is True
    event = EngagementEvent.objects.get()
    assert (event.contact, event.type, event.external_id) == (
        contact,
        "form_submission",
        f"form-submission:{submission.pk}",
    )
    assert contact.last_engaged_at == event.occurred_at


def test_a_form_without_its_own_setting_follows_the_account_default(account):
    account.forms_create_marketing = False
    account.save()
    form = make_form(create_as_marketing=None)

    form_submit(form=form, data={"email": "a@example.com", "first_name": "A"})

    contact = Contact.objects.get()
    assert contact.marketing_status == N
    assert (contact.marketing_reason_type, contact.marketing_reason_name) == ("form", "Newsletter")
    assert StatusChange.objects.count() == 0


def test_a_form_setting_overrides_the_account_default(account):
    account.forms_create_marketing = False
    account.save()
    marketing = make_form(create_as_marketing=True)
    plain = make_form(name="Contact us", slug="contact-us", create_as_marketing=False)
    account.forms_create_marketing = True
    account.save()

    form_submit(form=marketing, data={"email": "m@example.com", "first_name": "M"})
    form_submit(form=plain, data={"email": "n@example.com", "first_name": "N"})

    assert dict(Contact.objects.values_list("email", "marketing_status")) == {
        "m@example.com": M,
        "n@example.com": N,
    }


def test_upgrade_on_makes_an_existing_non_marketing_contact_marketing_logged_with_the_form(
    account,
):
    known = existing_contact(company="Old Co")
    form = make_form(upgrade_existing=True)

    result = form_submit(
        form=form, data={"email": "KNOWN@example.com", "first_name": "Kim", "company": "New Co"}
    )

    known.refresh_from_db()
    assert (known.marketing_status, known.first_name, known.company) == (M, "Kim", "New Co")
    assert known.source.name == "Manual"  # the source it was created from stays
    assert ledger_rows() == [("known@example.com", "upgrade", "form", str(form.pk), "Newsletter")]
    assert (result.intake.created, result.intake.upgraded) == (False, True)
    assert FormSubmission.objects.get().upgraded is True


def test_upgrade_off_leaves_an_existing_non_marketing_contact_non_marketing(account):
    known = existing_contact()
    form = make_form(upgrade_existing=False)

    form_submit(form=form, data={"email": "known@example.com", "first_name": "Kim"})

    known.refresh_from_db()
    assert (known.marketing_status, known.first_name) == (N, "Kim")
    assert StatusChange.objects.count() == 0
    assert FormSubmission.objects.get().upgraded is False


def test_upgrade_cancels_a_pending_downgrade(account, manual):
    known = existing_contact()
    contacts_set_marketing(contacts=known, source=manual)
    contacts_set_non_marketing(contacts=known, source=manual)
    form = make_form()

    form_submit(form=form, data={"email": "known@example.com", "first_name": "Kim"})

    known.refresh_from_db()
    assert (known.marketing_status, known.marketing_until) == (M, None)
    assert ledger_rows()[-1] == (
        "known@example.com",
        "downgrade_cancelled",
        "form",
        str(form.pk),
        "Newsletter",
    )


def test_a_non_marketing_form_never_downgrades_a_marketing_contact(account, manual):
    known = existing_contact()
    contacts_set_marketing(contacts=known, source=manual)
    form = make_form(create_as_marketing=False)

    form_submit(form=form, data={"email": "known@example.com", "first_name": "Kim"})

    known.refresh_from_db()
    assert (known.marketing_status, known.marketing_until) == (M, None)
    assert StatusChange.objects.count() == 1


def test_an_unticked_optional_consent_box_never_makes_anyone_marketing(account):
    existing_contact()
    form = make_form(consent_label="Send me news", consent_required=False)

    form_submit(form=form, data={"email": "new@example.com", "first_name": "A"}, consent=False)
    form_submit(form=form, data={"email": "known@example.com", "first_name": "K"}, consent=False)
    form_submit(form=form, data={"email": "yes@example.com", "first_name": "Y"}, consent=True)

    assert dict(Contact.objects.values_list("email", "marketing_status")) == {
        "new@example.com": N,
        "known@example.com": N,
        "yes@example.com": M,
    }
    assert list(FormSubmission.objects.order_by("id").values_list("consent", flat=True)) == [
        False,
        False,
        True,
    ]


def test_a_retried_submission_id_stores_nothing_new(account):
    form = make_form()

    first = form_submit(
        form=form, data={"email": "a@example.com", "first_name": "A"}, submission_id="s-1"
    )
    again = form_submit(
        form=form, data={"email": "a@example.com", "first_name": "B"}, submission_id="s-1"
    )

    assert (first.replayed, again.replayed) == (False, True)
    assert again.submission == first.submission
    assert FormSubmission.objects.count() == 1
    assert EngagementEvent.objects.count() == 1
    assert StatusChange.objects.count() == 1
    assert Contact.objects.get().first_name == "A"


# --- the public API -----------------------------------------------------------------------


def api_url(slug="newsletter"):
    return f"/api/intake/forms/{slug}/"


def test_the_api_accepts_a_submission_without_authentication(account):
    form = make_form()

    response = APIClient().post(
        api_url(), {"email": "a@example.com", "first_name": "Ann"}, format="json"
    )

    assert response.status_code == 201
    assert response.data == {"accepted": True, "message": form.success_message}
    assert Contact.objects.get().marketing_status == M


def test_the_api_answers_errors_per_field_and_stores_nothing(account):
    make_form(consent_label="I agree", consent_required=True)

    response = APIClient().post(
        api_url(), {"email": "not-an-email", "company": "x" * 201}, format="json"
    )

    assert response.status_code == 400
    assert response.data == {
        "email": ["Enter a valid email address."],
        "first_name": ["This field is required."],
        "company": ["Ensure this value has at most 200 characters (it has 201)."],
        "consent": ["Please tick this box to send the form."],
    }
    assert (Contact.objects.count(), FormSubmission.objects.count()) == (0, 0)


@pytest.mark.parametrize("body", [[1, 2], "text"])
def test_the_api_refuses_a_body_that_is_not_an_object(account, body):
    make_form()

    response = APIClient().post(api_url(), body, format="json")

    assert response.status_code == 400
    assert Contact.objects.count() == 0


def test_the_api_answers_404_for_an_unknown_or_inactive_form(account):
    make_form(is_active=False)

    assert APIClient().post(api_url(), {"email": "a@example.com"}, format="json").status_code == 404
    assert (
        APIClient().post(api_url("nope"), {"email": "a@example.com"}, format="json").status_code
        == 404
    )


def test_the_honeypot_is_answered_as_a_success_and_nothing_is_stored(account, caplog):
    form = make_form()

    with caplog.at_level(logging.WARNING, logger="contacts.intake"):
        response = APIClient().post(
            api_url(),
            {"email": "bot@example.com", "first_name": "Bot", "website": "http://spam"},
            format="json",
        )

    assert response.status_code == 201
    assert response.data == {"accepted": True, "message": form.success_message}
    assert (Contact.objects.count(), FormSubmission.objects.count()) == (0, 0)
    assert "honeypot filled" in caplog.text


def test_the_api_retry_with_the_idempotency_header_stores_one_submission(account):
    make_form()
    client = APIClient()
    body = {"email": "a@example.com", "first_name": "Ann"}

    first = client.post(api_url(), body, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    second = client.post(api_url(), body, format="json", HTTP_IDEMPOTENCY_KEY="k1")

    assert (first.status_code, second.status_code) == (201, 201)
    assert (FormSubmission.objects.count(), StatusChange.objects.count()) == (1, 1)


def test_public_intake_is_throttled_per_client(account):
    make_form()
    client = APIClient()

    with throttle_rates(intake="3/minute", intake_apps="100/minute"):
        codes = [
            client.post(
                api_url(), {"email": f"p{i}@example.com", "first_name": "P"}, format="json"
            ).status_code
            for i in range(4)
        ]

    assert codes == [201, 201, 201, 429]
    assert Contact.objects.count() == 3


# --- the hosted page ---------------------------------------------------------------------


def page_post(client, **data):
    return client.post("/forms/newsletter/", data)


def test_the_hosted_page_shows_the_asked_fields_and_the_honeypot(account):
    make_form(consent_label="Send me the newsletter", consent_required=True)

    response = Client().get("/forms/newsletter/")

    html = response.content.decode()
    assert response.status_code == 200
    for name in ("email", "first_name", "company", "consent", "submission_id", "website"):
        assert f'name="{name}"' in html
    assert "Send me the newsletter" in html
    assert "csrfmiddlewaretoken" in html
    assert "http://" not in html and "https://" not in html  # no CDN


def test_the_hosted_page_needs_the_csrf_token_and_then_stores_the_contact(account):
    form = make_form()
    client = Client(enforce_csrf_checks=True)
    page = client.get("/forms/newsletter/")
    token = page.cookies["csrftoken"].value
    submission_id = page.context["submission"]["submission_id"].value()

    refused = client.post("/forms/newsletter/", {"email": "a@example.com", "first_name": "A"})
    sent = client.post(
        "/forms/newsletter/",
        {
            "csrfmiddlewaretoken": token,
            "email": "a@example.com",
            "first_name": "Ann",
            "submission_id": submission_id,
            "website": "",
        },
    )
    twice = client.post(
        "/forms/newsletter/",
        {
            "csrfmiddlewaretoken": token,
            "email": "a@example.com",
            "first_name": "Ann",
            "submission_id": submission_id,
        },
    )
    thanks = client.get(sent["Location"])

    assert refused.status_code == 403
    assert (sent.status_code, sent["Location"]) == (302, "/forms/newsletter/thanks/")
    assert twice.status_code == 302
    assert form.success_message in thanks.content.decode()
    contact = Contact.objects.get()
    assert (contact.first_name, contact.marketing_status, contact.marketing_reason_type) == (
        "Ann",
        M,
        "form",
    )
    assert FormSubmission.objects.count() == 1


def test_the_hosted_page_shows_errors_next_to_their_fields(account):
    make_form()

    response = page_post(Client(), email="nope", first_name="")

    html = response.content.decode()
    assert response.status_code == 400
    assert (
        '<ul class="errors" id="id_email_errors"><li>Enter a valid email address.</li></ul>' in html
    )
    assert (
        '<ul class="errors" id="id_first_name_errors"><li>This field is required.</li></ul>' in html
    )
    assert 'value="nope"' in html  # what was typed is kept
    assert Contact.objects.count() == 0


def test_the_hosted_page_honeypot_redirects_and_stores_nothing(account):
    make_form()

    response = page_post(Client(), email="bot@example.com", first_name="B", website="spam")

    assert (response.status_code, response["Location"]) == (302, "/forms/newsletter/thanks/")
    assert Contact.objects.count() == 0


def test_the_hosted_page_is_throttled(account):
    make_form()
    client = Client()

    with throttle_rates(intake="2/minute", intake_apps="100/minute"):
        codes = [
            page_post(client, email=f"h{i}@example.com", first_name="H").status_code
            for i in range(3)
        ]

    assert codes == [302, 302, 429]
    assert Contact.objects.count() == 2


def test_an_inactive_form_has_no_page(account):
    make_form(is_active=False)

    assert Client().get("/forms/newsletter/").status_code == 404


# --- external forms ------------------------------------------------------------------------

EXTERNAL = "/api/intake/external-forms/"


def external_body(email="ext@example.com", **extra):
    body = {
        "form_id": "wp-contact-7",
        "page_url": "https://example.org/contact",
        "fields": {"email": email, "first_name": "Eve"},
    }
    body.update(extra)
    return body


def test_an_external_form_creates_a_marketing_contact_by_default(account):
    response = APIClient().post(EXTERNAL, external_body(), format="json")

    assert response.status_code == 201
    contact = Contact.objects.get()
    assert (contact.marketing_status, contact.source.kind, contact.source.name) == (
        M,
        "external_form",
        "External forms",
    )
    assert ledger_rows() == [
        (
            "ext@example.com",
            "upgrade",
            "form",
            "external:wp-contact-7",
            "External form “wp-contact-7”",
        )
    ]
    submission = FormSubmission.objects.get()
    assert (submission.form, submission.external_form, submission.page_url) == (
        None,
        "wp-contact-7",
        "https://example.org/contact",
    )
    assert EngagementEvent.objects.get().type == "form_submission"


def test_the_external_forms_setting_off_creates_non_marketing_and_does_not_upgrade(account):
    account.external_forms_marketing = False
    account.save()
    known = existing_contact()

    external_form_submit(form_identifier="f", data={"email": "new@example.com"})
    external_form_submit(form_identifier="f", data={"email": "known@example.com"})

    known.refresh_from_db()
    assert dict(Contact.objects.values_list("email", "marketing_status")) == {
        "new@example.com": N,
        "known@example.com": N,
    }
    assert StatusChange.objects.count() == 0


def test_the_external_forms_setting_on_upgrades_an_existing_contact(account):
    known = existing_contact()

    external_form_submit(form_identifier="f", data={"email": "known@example.com"})

    known.refresh_from_db()
    assert known.marketing_status == M
    assert ledger_rows() == [
        ("known@example.com", "upgrade", "form", "external:f", "External form “f”")
    ]


def test_external_form_errors_are_per_field(account):
    response = APIClient().post(
        EXTERNAL, {"page_url": "x", "fields": {"email": "bad"}}, format="json"
    )

    assert response.status_code == 400
    assert response.data == {
        "form_id": ["This field is required."],
        "fields": {"email": ["Enter a valid email address."]},
    }
    assert Contact.objects.count() == 0


def test_external_form_honeypot_and_retry(account):
    client = APIClient()

    bot = client.post(EXTERNAL, external_body(website="spam"), format="json")
    first = client.post(EXTERNAL, external_body(submission_id="e1"), format="json")
    again = client.post(EXTERNAL, external_body(submission_id="e1"), format="json")

    assert (bot.status_code, first.status_code, again.status_code) == (201, 201, 201)
    assert bot.data == first.data == again.data
    assert (Contact.objects.count(), FormSubmission.objects.count()) == (1, 1)
