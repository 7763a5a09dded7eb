"""What the role matrix is made of: its columns (the roles), a row, and the effects an
allowed request is checked for. The rows are in permission_matrix_models.py,
permission_matrix_pages.py and permission_matrix_api.py; permission_matrix.py puts them
together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The columns: the four roles (Django groups made by crm's migrations, crm/roles.py), a
# superuser and an anonymous visitor.
OPS, SALES, BILLING, AUDITOR, SUPERUSER, ANONYMOUS = (
    "ops",
    "sales",
    "billing",
    "auditor",
    "superuser",
    "anonymous",
)
ROLES = (OPS, SALES, BILLING, AUDITOR, SUPERUSER, ANONYMOUS)
ROLE_TITLES = {
    OPS: "Marketing ops",
    SALES: "Sales",
    BILLING: "Billing admin",
    AUDITOR: "Auditor",
    SUPERUSER: "superuser",
    ANONYMOUS: "anonymous",
}
ROLE_GROUPS = {OPS: "Marketing ops", SALES: "Sales", BILLING: "Billing admin", AUDITOR: "Auditor"}

ADMIN, API, PUBLIC = "Admin", "API", "Public page"

NOBODY: frozenset[str] = frozenset()
SU = frozenset({SUPERUSER})
EVERYONE = frozenset(ROLES)


STATUS = "change_marketing_status"


def who(*roles: str) -> frozenset[str]:
    """Roles allowed; the superuser is always among them (it has every permission)."""
    return frozenset({*roles, SUPERUSER})


VIEWERS_OF_CONTACTS = who(OPS, SALES, BILLING, AUDITOR)


@dataclass(frozen=True)
class Row:
    interface: str
    area: str
    action: str
    method: str
    path: str
    allowed: frozenset[str]
    needs: str
    url: Callable[[Any], str]
    data: Callable[[Any], dict] | None = None
    ok: tuple[int, ...] = (200,)
    effect: Callable[[Any, Any], None] | None = None
    # A changelist action (its name): refused by not being offered to those who see the
    # list (`viewers`); the others cannot see the list at all (403).
    action_name: str = ""
    viewers: frozenset[str] = NOBODY
    # Admin add and change: the page whose form the user fills in (`data` overrides fields).
    form_page: Callable[[Any], str] | None = None
    form_id: str = ""
    # API: the body's format, and the status a signed-in user is refused with (else 403).
    fmt: str = "json"
    refused: int = 403

    @property
    def key(self) -> str:
        return f"{self.interface}:{self.method} {self.path}:{self.action}"


# Effects: what an allowed request must have done, checked after it.


def model_of(label: str):
    from django.apps import apps

    return apps.get_model(label)


def table_of(label: str) -> str:
    return model_of(label)._meta.db_table


def one_more(label: str):
    def check(w, response):
        count = model_of(label)._default_manager.count()
        assert count == len(w.baseline[table_of(label)]) + 1, f"{label}: {count} rows"

    return check


def gone(label: str, pick: Callable[[Any], Any]):
    def check(w, response):
        assert not model_of(label)._default_manager.filter(pk=pick(w).pk).exists()

    return check


def refreshed(pick: Callable[[Any], Any]):
    obj = None

    def get(w):
        nonlocal obj
        obj = pick(w)
        return type(obj)._default_manager.get(pk=obj.pk)

    return get


def has(pick: Callable[[Any], Any], **values):
    """The object, read again, has these field values."""

    def check(w, response):
        obj = refreshed(pick)(w)
        got = {name: getattr(obj, name) for name in values}
        assert got == values, got

    return check


def contains(text: Callable[[Any], str] | str):
    def check(w, response):
        body = (
            b"".join(response.streaming_content)
            if getattr(response, "streaming", False)
            else response.content
        ).decode()
        wanted = text(w) if callable(text) else text
        assert wanted in body, f"{wanted!r} not in the answer"

    return check


def status_of(pick, status: str):
    return has(pick, status=status)


def marketing(pick):
    def check(w, response):
        from django.utils import timezone

        assert refreshed(pick)(w).is_billable(timezone.now())

    return check


def pending(pick):
    def check(w, response):
        from django.utils import timezone

        assert refreshed(pick)(w).pending_from(timezone.now()) is not None

    return check


def results(w, response):
    data = response.json()
    assert data["results"] if isinstance(data, dict) and "results" in data else data


def same_id(pick, key: str = "id"):
    def check(w, response):
        assert str(response.json()[key]) == str(getattr(pick(w), key if key != "id" else "pk"))

    return check


def member_of(owner, contact, through: str, owner_field: str):
    def check(w, response):
        assert (
            model_of(through)
            ._default_manager.filter(**{owner_field: owner(w), "contact": contact(w)})
            .exists()
        )

    return check


def not_member_of(owner, contact, through: str, owner_field: str):
    def check(w, response):
        assert (
            not model_of(through)
            ._default_manager.filter(**{owner_field: owner(w), "contact": contact(w)})
            .exists()
        )

    return check


def messages_of(response) -> list[str]:
    """The messages a response leaves for the next page (the messages cookie)."""
    from django.contrib.messages.storage.cookie import CookieStorage
    from django.http import HttpRequest

    cookie = response.cookies.get("messages")
    if cookie is None or not cookie.value:
        return []
    return [str(m) for m in CookieStorage(HttpRequest())._decode(cookie.value) or []]


def csv_upload(name: str = "more.csv"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, b"Email\nmore.leads@example.com\n", "text/csv")


def expect(value: bool) -> None:
    """An effect written as an expression (in a lambda, where `assert` cannot go)."""
    assert value
