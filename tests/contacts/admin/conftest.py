"""The contacts admin tests' people: ann, bob, cat and dan, in every status."""

import pytest

from tests.contacts.admin.support import make_marketing, make_pending
from tests.factories import ContactFactory, SourceFactory


@pytest.fixture
def people(account):
    """Four contacts: ann non-marketing, bob marketing, cat pending, dan non-marketing customer."""
    form = SourceFactory(name="Website form", kind="form")
    manual = SourceFactory(name="Manual", kind="manual")
    ann = ContactFactory(email="ann@example.com", first_name="Ann", last_name="Lee", source=manual)
    bob = ContactFactory(email="bob@acme.com", first_name="Bob", company="Acme", source=form)
    cat = ContactFactory(email="cat@example.com", first_name="Cat", source=form)
    dan = ContactFactory(
        email="dan@example.com", first_name="Dan", lifecycle_stage="customer", source=manual
    )
    make_marketing(bob)
    make_pending(cat)
    return {"ann": ann, "bob": bob, "cat": cat, "dan": dan}
