"""Performing one cell of the role matrix and judging its answer."""

from __future__ import annotations

from tests.crm.permission_rows import ANONYMOUS, API, SUPERUSER, Row, messages_of
from tests.crm.permission_world import (
    api_client,
    csrf_of,
    db_snapshot,
    form_values,
    snapshot_difference,
)


def _form_data(w, row: Row, role: str, client) -> tuple[dict, str | None]:
    """What the user submits: the form page's values as they load it (denied users, who
    cannot load it, submit what the superuser's page holds), then the row's own fields."""
    cached = w.form_cache.get(row.key)
    if role in row.allowed or cached is None:
        viewer = client if role in row.allowed else w.browsers[SUPERUSER][0]
        page = viewer.get(row.form_page(w))
        html = page.content.decode() if page.status_code == 200 else ""
        values = form_values(html, row.form_id) if html and row.form_id else {}
        # A public page may be exempt from CSRF (the unsubscribe link): no token on it.
        has_token = "csrfmiddlewaretoken" in html
        token = csrf_of(html) if has_token and role in row.allowed else None
        if role not in row.allowed:
            w.form_cache[row.key] = values
        return values, token
    return cached, None


def perform(w, row: Row, role: str):
    url = row.url(w)
    data = row.data(w) if row.data else {}
    if row.interface == API:
        client = api_client(w, role)
        send = getattr(client, row.method.lower())
        if row.method in ("GET", "DELETE"):
            return send(url)
        return send(url, data, format=row.fmt)
    client, token = w.browsers[role]
    if row.method == "GET":
        return client.get(url)
    if row.form_page is not None:
        values, page_token = _form_data(w, row, role, client)
        data = {**values, **data}
        token = page_token or token
    return client.post(url, {**data, "csrfmiddlewaretoken": token})


def assert_refused(row: Row, role: str, response) -> None:
    code = response.status_code
    if row.interface == API:
        expected = 401 if role == ANONYMOUS else row.refused
        assert code == expected, f"{code}, expected {expected}: {response.content[:300]!r}"
    elif role == ANONYMOUS:
        assert code == 302 and response["Location"].startswith("/admin/login/"), code
    elif row.action_name and role in row.viewers:
        # Not offered to this user: Django answers "No action selected." (or, with no action
        # for this user at all, shows the list again without it) and does nothing.
        if code == 302:
            assert "No action selected." in messages_of(response), messages_of(response)
        else:
            assert code == 200, f"{code}: the action ran or failed instead of being hidden"
            assert f'value="{row.action_name}"' not in response.content.decode()
    else:
        assert code == 403, f"{code}, expected 403"


def check_cell(w, row: Row, role: str) -> None:
    response = perform(w, row, role)
    if role in row.allowed:
        assert not response.get("Location", "").startswith("/admin/login/"), "logged out"
        assert response.status_code in row.ok, (
            f"{response.status_code}, expected {row.ok}: "
            f"{getattr(response, 'content', b'')[:500]!r} {messages_of(response)}"
        )
        if row.effect is not None:
            row.effect(w, response)
        return
    assert_refused(row, role, response)
    changed = snapshot_difference(w.baseline, db_snapshot(w.tables))
    assert not changed, f"a refused request changed the database: {changed}"
