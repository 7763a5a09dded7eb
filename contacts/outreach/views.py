"""The unsubscribe page of every marketing email."""

from __future__ import annotations

from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from contacts.models import Contact
from contacts.outreach.services import (
    InvalidUnsubscribeToken,
    contact_unsubscribe,
    unsubscribe_token_read,
)

UNSUBSCRIBE_TEMPLATE = "contacts/unsubscribe.html"


def masked(address: str) -> str:
    """ann.lee@example.com → a***@example.com: enough to recognise, not to harvest."""
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}"


# The signed token is the credential, not a session: a CSRF token adds nothing, and
# RFC 8058 one-click unsubscribe (List-Unsubscribe-Post) POSTs here without one.
@csrf_exempt
@require_http_methods(["GET", "POST"])
def unsubscribe(request, token: str):
    """GET shows a confirm button (link scanners follow GETs: they must not unsubscribe);
    POST unsubscribes. A tampered or foreign token: 400 and nothing changes."""
    try:
        contact_id, _ = unsubscribe_token_read(token)
        if request.method == "POST":
            result = contact_unsubscribe(token=token)
            context = {"state": "done", "already": result.already}
            context["address"] = masked(result.contact.email)
            return render(request, UNSUBSCRIBE_TEMPLATE, context)
        contact = Contact.objects.filter(pk=contact_id).only("email", "unsubscribed").first()
        if contact is None:
            raise InvalidUnsubscribeToken("This unsubscribe link is no longer valid.")
    except InvalidUnsubscribeToken as error:
        return render(
            request, UNSUBSCRIBE_TEMPLATE, {"state": "invalid", "message": str(error)}, status=400
        )
    context = {
        "state": "already" if contact.unsubscribed else "confirm",
        "address": masked(contact.email),
    }
    return render(request, UNSUBSCRIBE_TEMPLATE, context)
