"""Public intake under real concurrency (PostgreSQL: a connection and a transaction each)."""

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient

from contacts.intake.models import FormSubmission
from contacts.intake.services import EXTERNAL_FORMS_SOURCE_NAME
from contacts.models import Contact, Source
from tests.concurrency import run_together

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

EXTERNAL = "/api/intake/external-forms/"


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    cache.clear()
    yield
    cache.clear()


def test_sixteen_first_submissions_at_once_share_one_new_source(account):
    # Given no external form has been submitted yet: its source does not exist
    assert not Source.objects.filter(name=EXTERNAL_FORMS_SOURCE_NAME).exists()

    # When 16 visitors submit external forms at the same instant
    def submit(n):
        body = {"form_id": f"wp-{n % 3}", "fields": {"email": f"first{n}@example.org"}}
        return lambda: APIClient().post(EXTERNAL, body, format="json").status_code

    codes = run_together(*[submit(n) for n in range(16)])

    # Then every one is answered 201 and stored, under the one source made on first use
    assert codes == [201] * 16
    source = Source.objects.get(name=EXTERNAL_FORMS_SOURCE_NAME)
    assert source.kind == "external_form"
    assert Contact.objects.filter(source=source).count() == 16
    assert FormSubmission.objects.count() == 16
