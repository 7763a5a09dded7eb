"""Who may call the HubSpot-compatible API: a Marketable API token, sent as HubSpot's
clients send theirs, and the contacts API's own model permissions."""

from __future__ import annotations

from rest_framework.authentication import TokenAuthentication

from contacts.status.rules import MARKETING_STATUS_PERMISSION

VIEW = "contacts.view_contact"
ADD = "contacts.add_contact"
CHANGE = "contacts.change_contact"
DELETE = "contacts.delete_contact"
# Writing hs_marketable_status needs this too (contacts.status.rules names it once).
STATUS = MARKETING_STATUS_PERMISSION


class BearerTokenAuthentication(TokenAuthentication):
    """DRF's API token (the one /api/ takes as `Token <key>`), as `Authorization: Bearer
    <key>` — what `HubSpot(access_token=<key>)` sends."""

    keyword = "Bearer"
