"""The role matrix: what each role may do through the admin and the API.

One data structure, three uses:
- tests/crm/test_permissions_admin.py and test_permissions_api.py perform every cell —
  an allowed cell must work and have its effect, a denied one must be refused and change
  nothing;
- tests/crm/test_permissions_doc.py checks that docs/PERMISSIONS.md shows exactly this
  table (`render_markdown`), and that the table has a row for every admin page, admin
  action and API endpoint the code has;
- `python -m tests.crm.permission_matrix` rewrites the table in docs/PERMISSIONS.md.

Each row (tests/crm/permission_rows.py) names the request (method and path, `{id}` for an
object), who may make it, the permission the code checks (`needs`), and how a test makes
it against the world of tests/crm/permission_world.py: the URL, the data, the answer
expected when allowed and the effect to look for. The rows themselves are in
permission_matrix_models.py, permission_matrix_pages.py and
permission_matrix_api.py.
"""

from __future__ import annotations

from tests.crm.permission_matrix_api import API_ROWS, PUBLIC_ROWS
from tests.crm.permission_matrix_pages import ADMIN_ROWS
from tests.crm.permission_rows import ADMIN, API, PUBLIC, ROLE_TITLES, ROLES, Row

ROWS = ADMIN_ROWS + API_ROWS + PUBLIC_ROWS


# The table in docs/PERMISSIONS.md.

DOC = "docs/PERMISSIONS.md"
START, END = "<!-- role-matrix:start -->", "<!-- role-matrix:end -->"


def render_markdown(rows: list[Row] = ROWS) -> str:
    """The table, one section per interface: ✓ allowed, — refused (403, or hidden: the
    action is not offered; anonymous: the login page or 401)."""
    head = "| Area | Action | Request | " + " | ".join(ROLE_TITLES[r] for r in ROLES) + " | Needs |"
    rule = "|" + "---|" * (len(ROLES) + 4)
    out = []
    for interface in (ADMIN, API, PUBLIC):
        out += [f"### {interface}", "", head, rule]
        for row in rows:
            if row.interface != interface:
                continue
            marks = " | ".join("✓" if role in row.allowed else "—" for role in ROLES)
            out.append(
                f"| {row.area} | {row.action} | `{row.method} {row.path}` | {marks} | {row.needs} |"
            )
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def write_doc(path: str = DOC) -> None:
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"{head}{START}\n{render_markdown()}{END}{tail}")


if __name__ == "__main__":
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings.test")
    django.setup()
    write_doc()
