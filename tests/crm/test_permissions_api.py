"""The role matrix through the API, with each role's token (tests/crm/permission_matrix.py).

Allowed: the request works and its effect is there. Refused: 403 (401 anonymous) — and the
database is exactly as before.
"""

import pytest

from tests.crm.permission_cells import check_cell
from tests.crm.permission_matrix_api import API_ROWS
from tests.crm.permission_rows import ROLES

CELLS = [(row, role) for row in API_ROWS for role in ROLES]


@pytest.mark.parametrize(
    ("row", "role"),
    CELLS,
    ids=[f"{row.method} {row.path} {row.action} [{role}]" for row, role in CELLS],
)
def test_api_cell(cell, row, role):
    check_cell(cell, row, role)
