"""HTTP views of contacts outside the admin and the API.

* The hosted form page, /forms/<slug>/: an interface over `contacts.services.form_submit`.
  Django's CSRF protection applies (the page is ours); posts are throttled like the public
  API (scope "intake"); a filled honeypot is answered like a success and nothing is stored;
  after a submission the browser is redirected to the thanks page (a reload sends nothing
  twice, and the hidden submission id makes a double click store one submission).
* The public unsubscribe page (no login).
* The streamed CSV export response the admin and the API both return.
"""

from __future__ import annotations

import logging
import uuid

from django.http import Http404, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from contacts.api.intake_auth import PUBLIC_SCOPE, IntakeThrottle
from contacts.forms import SUBMISSION_ID_FIELD, SubmissionForm, honeypot_filled
from contacts.models import Contact
from contacts.selectors import contacts_export_csv, form_public
from contacts.services import (
    InvalidUnsubscribeToken,
    contact_unsubscribe,
    form_submit,
    unsubscribe_token_read,
)

intake_log = logging.getLogger("contacts.intake")


class _ThrottleScope:
    throttle_scope = PUBLIC_SCOPE


def _form_or_404(slug: str):
    form = form_public(slug=slug)
    if form is None:
        raise Http404("No such form.")
    return form


@require_http_methods(["GET", "POST"])
def form_page(request, slug: str):
    form = _form_or_404(slug)
    status = 200
    if request.method == "POST":
        if not IntakeThrottle().allow_request(request, _ThrottleScope):
            return render(request, "contacts/forms/throttled.html", {"form": form}, status=429)
        thanks = reverse("contacts_public:form_thanks", args=[form.slug])
        if honeypot_filled(request.POST):
            intake_log.warning(
                "form %s: honeypot filled by %s; nothing stored",
                slug,
                request.META.get("REMOTE_ADDR", ""),
            )
            return HttpResponseRedirect(thanks)
        submission = SubmissionForm(request.POST, intake_form=form)
        if submission.is_valid():
            form_submit(
                form=form,
                data=submission.contact_data(),
                consent=submission.cleaned_data.get("consent"),
                submission_id=submission.cleaned_data.get(SUBMISSION_ID_FIELD) or None,
                page_url=request.build_absolute_uri(),
            )
            return HttpResponseRedirect(thanks)
        status = 400
    else:
        submission = SubmissionForm(
            intake_form=form, initial={SUBMISSION_ID_FIELD: uuid.uuid4().hex}
        )
    return render(
        request, "contacts/forms/page.html", {"form": form, "submission": submission}, status=status
    )


@require_http_methods(["GET"])
def form_thanks(request, slug: str):
    form = _form_or_404(slug)
    return render(request, "contacts/forms/thanks.html", {"form": form})


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


def export_response(queryset, now) -> StreamingHttpResponse:
    """The CSV export, streamed chunk by chunk (contacts.selectors.contacts_export_csv)."""
    response = StreamingHttpResponse(
        contacts_export_csv(contacts=queryset, at=now), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="contacts-{now:%Y%m%d-%H%M%S}.csv"'
    return response
