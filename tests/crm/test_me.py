"""GET /api/me/: who a token belongs to, its roles and permissions."""

from django.contrib.auth.models import Permission
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import UserFactory

ME = "/api/me/"


def test_a_token_says_who_it_is_with_its_roles_and_permissions(db):
    user = UserFactory(username="biller", email="b@example.com", groups=["Billing admin"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")

    response = client.get(ME)

    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["username"], body["email"]) == (user.pk, "biller", "b@example.com")
    assert body["groups"] == ["Billing admin"]
    assert body["is_superuser"] is False
    assert "billing.change_subscription" in body["permissions"]
    assert "contacts.change_marketing_status" not in body["permissions"]
    assert body["permissions"] == sorted(user.get_all_permissions())


def test_a_permission_given_directly_is_listed(db):
    user = UserFactory(username="helper")
    user.user_permissions.add(Permission.objects.get(codename="view_invoice"))
    client = APIClient()
    client.force_authenticate(user)

    body = client.get(ME).json()

    assert (body["groups"], body["permissions"]) == ([], ["billing.view_invoice"])


def test_a_superuser_has_every_permission(superuser):
    client = APIClient()
    client.force_authenticate(superuser)

    body = client.get(ME).json()

    assert body["is_superuser"] is True
    assert len(body["permissions"]) == Permission.objects.count()


def test_anonymous_is_a_401(db):
    response = APIClient().get(ME)

    assert response.status_code == 401
