"""The billing admin, one module a concern; importing them registers their admins."""

from billing.admin import alerts, approvals, dashboard, periods  # noqa: F401
