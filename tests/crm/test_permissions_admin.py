"""The role matrix through the admin: every page, action and button, as each role, with a
real logged-in session and a real CSRF token (tests/crm/permission_matrix.py).

Allowed: the request works and its effect is there. Refused: 403, the action is not
offered, or (anonymous) the login page — and the database is exactly as before.
"""

import pytest

from tests.crm.permission_cells import check_cell
from tests.crm.permission_matrix_api import PUBLIC_ROWS
from tests.crm.permission_matrix_pages import ADMIN_ROWS
from tests.crm.permission_rows import ROLES

CELLS = [(row, role) for row in ADMIN_ROWS + PUBLIC_ROWS for role in ROLES]


@pytest.mark.parametrize(
    ("row", "role"),
    CELLS,
    ids=[f"{row.method} {row.path} {row.action} [{role}]" for row, role in CELLS],
)
def test_admin_cell(cell, row, role):
    check_cell(cell, row, role)
