import pytest
from django.test import Client

from tests.factories import UserFactory


def _client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def ops_client(marketing_ops):
    return _client_for(marketing_ops)


@pytest.fixture
def sales_client(sales):
    return _client_for(sales)


@pytest.fixture
def super_client(superuser):
    return _client_for(superuser)


@pytest.fixture
def auditor(db):
    return UserFactory(username="auditor", groups=["Auditor"])


@pytest.fixture
def auditor_client(auditor):
    return _client_for(auditor)


# --- communications ---


@pytest.fixture
def comms_roles(db):
    """The groups with the permissions crm/roles.py lists today (the crm migration that
    syncs the communications permissions comes with the merge; until then, this does)."""
    from django.contrib.auth.models import Group, Permission

    from crm.roles import ROLE_PERMISSIONS

    for role, names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        for name in names:
            if name.startswith("view:"):
                perms = Permission.objects.filter(
                    content_type__app_label=name.split(":", 1)[1], codename__startswith="view_"
                )
            else:
                app_label, codename = name.split(".", 1)
                perms = Permission.objects.filter(
                    content_type__app_label=app_label, codename=codename
                )
            group.permissions.add(*perms)
