"""HTTP views of contacts outside the admin and the API: the public unsubscribe page (no
login), and the streamed CSV export response the admin and the API both return."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from contacts.models import Contact
from contacts.selectors import contacts_export_csv
from contacts.services import InvalidUnsubscribeToken, contact_unsubscribe, unsubscribe_token_read

TEMPLATE = "contacts/unsubscribe.html"


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
            return render(request, TEMPLATE, context)
        contact = Contact.objects.filter(pk=contact_id).only("email", "unsubscribed").first()
        if contact is None:
            raise InvalidUnsubscribeToken("This unsubscribe link is no longer valid.")
    except InvalidUnsubscribeToken as error:
        return render(request, TEMPLATE, {"state": "invalid", "message": str(error)}, status=400)
    context = {
        "state": "already" if contact.unsubscribed else "confirm",
        "address": masked(contact.email),
    }
    return render(request, TEMPLATE, context)


def export_response(queryset, now) -> StreamingHttpResponse:
    """The CSV export, streamed chunk by chunk (contacts.selectors.contacts_export_csv)."""
    response = StreamingHttpResponse(
        contacts_export_csv(contacts=queryset, at=now), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="contacts-{now:%Y%m%d-%H%M%S}.csv"'
    return response
