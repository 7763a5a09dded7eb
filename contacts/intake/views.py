"""The hosted form pages the public sees."""

from __future__ import annotations

import logging
import uuid

from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from contacts.intake.api.auth import PUBLIC_SCOPE, IntakeThrottle
from contacts.intake.forms import SUBMISSION_ID_FIELD, SubmissionForm, honeypot_filled
from contacts.intake.selectors import form_public
from contacts.intake.services import form_submit
from crm.throttling import client_address

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
                client_address(request),
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
