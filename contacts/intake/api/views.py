"""The intake endpoints (DESIGN §1.3, §3): forms, external forms, chatflows, connected apps,
ads leads.

Public endpoints (no authentication, throttled per address): forms, external forms,
chatflows. Token endpoints (each holder's own token, throttled per holder): connected
apps and ad accounts (see contacts.intake.api.auth). Public answers are the same whatever
happened (created, updated, a retry, a bot caught by the honeypot), so they reveal nothing
about who is a contact. Every path ends in contacts.services (`form_submit`,
`external_form_submit`, `chatflow_intake`, `connected_app_contacts_upsert`,
`ad_lead_receive`), which decide a new contact's status with `contacts_creation_policy`.
"""

from __future__ import annotations

import logging

from drf_spectacular.utils import extend_schema
from rest_framework import status as http
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts.api.views import IDEMPOTENCY_HEADER, IDEMPOTENCY_PARAMETER
from contacts.intake.api.auth import (
    APPS_SCOPE,
    PUBLIC_SCOPE,
    AdAccountTokenAuthentication,
    ConnectedAppTokenAuthentication,
    IntakeThrottle,
    IsTokenHolderOfThisUrl,
)
from contacts.intake.api.serializers import (
    AdLeadsResultSerializer,
    AdLeadsSerializer,
    ChatIntakeSerializer,
    ExternalFormSubmissionSerializer,
    FormSubmissionInputSerializer,
    IntakeAcceptedSerializer,
    IntegrationBatchResultSerializer,
    IntegrationBatchSerializer,
)
from contacts.intake.forms import HONEYPOT_FIELD, SubmissionForm, honeypot_filled
from contacts.intake.models import (
    AdAccount,
    ConnectedApp,
)
from contacts.intake.selectors import (
    chatflow_public,
    form_public,
)
from contacts.intake.services import (
    ADS_BATCH_MAX,
    INTAKE_BATCH_MAX,
    ad_lead_receive,
    chatflow_intake,
    connected_app_contacts_upsert,
    external_form_submit,
    form_submit,
)
from crm.api import json_type_errors
from crm.throttling import client_address

intake_log = logging.getLogger("contacts.intake")

INTAKE_TAG = "intake"
ACCEPTED = "Thank you: we have received your details."


def _accepted(message: str = ACCEPTED) -> Response:
    return Response({"accepted": True, "message": message}, status=http.HTTP_201_CREATED)


def _caught_by_honeypot(request, data, where: str) -> bool:
    """A valid submission with the honeypot filled: a bot. It gets the usual answer and
    nothing is stored (checked after validation: invalid input is a 400 whoever sends it)."""
    if not honeypot_filled(data):
        return False
    intake_log.warning("%s: honeypot filled by %s; nothing stored", where, client_address(request))
    return True


def _object_body(request) -> dict:
    if not hasattr(request.data, "get") or isinstance(request.data, list):
        raise ValidationError({"non_field_errors": ["Send one JSON object."]})
    return request.data


class PublicIntakeView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [IntakeThrottle]
    throttle_scope = PUBLIC_SCOPE


class FormIntakeView(PublicIntakeView):
    @extend_schema(
        tags=[INTAKE_TAG],
        summary="Submit one of our forms",
        description="Public, throttled. The form's own fields (see its hosted page) plus "
        "`consent` if it has a checkbox. Errors come per field (400). New contacts get the "
        "form's marketing setting (or the account's default); a form set to upgrade makes an "
        "existing non-marketing contact marketing. `submission_id` (or the Idempotency-Key "
        "header) makes a retry store nothing new.",
        request=FormSubmissionInputSerializer,
        responses={201: IntakeAcceptedSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
    )
    def post(self, request, slug: str):
        form = form_public(slug=slug)
        if form is None:
            raise NotFound("No active form with this address.")
        data = _object_body(request)
        # The documented types first, then the form's own fields.
        wrong_types = json_type_errors(FormSubmissionInputSerializer(), data)
        if wrong_types:
            raise ValidationError(wrong_types)
        submission = SubmissionForm(data=data, intake_form=form)
        if not submission.is_valid():
            raise ValidationError(submission.error_dict())
        if _caught_by_honeypot(request, data, f"form {slug}"):
            return _accepted(form.success_message)
        form_submit(
            form=form,
            data=submission.contact_data(),
            consent=submission.cleaned_data.get("consent"),
            submission_id=submission.cleaned_data.get("submission_id")
            or (request.headers.get(IDEMPOTENCY_HEADER) or "")[:100]
            or None,
            page_url=request.headers.get("Referer", "")[:1000],
        )
        return _accepted(form.success_message)


class ExternalFormIntakeView(PublicIntakeView):
    @extend_schema(
        tags=[INTAKE_TAG],
        summary="Submit an external (non-native) form",
        description="Public, throttled. One account setting decides whether new contacts are "
        "marketing (and whether an existing non-marketing contact is upgraded).",
        request=ExternalFormSubmissionSerializer,
        responses={201: IntakeAcceptedSerializer},
        parameters=[IDEMPOTENCY_PARAMETER],
    )
    def post(self, request):
        data = _object_body(request)
        serializer = ExternalFormSubmissionSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        valid = serializer.validated_data
        if _caught_by_honeypot(request, data, "external form") or _caught_by_honeypot(
            request, data["fields"], "external form"
        ):
            return _accepted()
        external_form_submit(
            form_identifier=valid["form_id"],
            data={k: v for k, v in valid["fields"].items() if v not in ("", None)},
            page_url=valid["page_url"],
            submission_id=valid.get("submission_id")
            or (request.headers.get(IDEMPOTENCY_HEADER) or "")[:100]
            or None,
        )
        return _accepted()


class ChatflowIntakeView(PublicIntakeView):
    @extend_schema(
        tags=[INTAKE_TAG],
        summary="A chat visitor's details",
        description="Public, throttled. Creates or updates the visitor's contact (the "
        "chatflow's marketing setting for a new one; never an upgrade) and records a chat "
        "engagement. The same conversation_id again changes nothing.",
        request=ChatIntakeSerializer,
        responses={201: IntakeAcceptedSerializer},
    )
    def post(self, request, pk: int):
        chatflow = chatflow_public(chatflow_id=pk)
        if chatflow is None:
            raise NotFound("No active chatflow with this id.")
        data = _object_body(request)
        serializer = ChatIntakeSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        if _caught_by_honeypot(request, data, f"chatflow {pk}"):
            return _accepted()
        valid = dict(serializer.validated_data)
        conversation_id = valid.pop("conversation_id", None) or None
        valid.pop(HONEYPOT_FIELD, None)
        chatflow_intake(
            chatflow=chatflow,
            data={k: v for k, v in valid.items() if v not in ("", None)},
            conversation_id=conversation_id,
        )
        return _accepted()


class IntegrationContactsView(APIView):
    authentication_classes = [ConnectedAppTokenAuthentication]
    permission_classes = [IsTokenHolderOfThisUrl]
    throttle_classes = [IntakeThrottle]
    throttle_scope = APPS_SCOPE
    holder_model = ConnectedApp

    @extend_schema(
        tags=[INTAKE_TAG],
        summary="Create or update a connected app's contacts (batch)",
        description=f"Authenticated by the app's own token (`Authorization: Bearer <token>`). "
        f"Up to {INTAKE_BATCH_MAX:,} contacts, matched by email (case-insensitive). New "
        "contacts get the app's marketing setting as it is now (contacts created before it "
        "was switched on stay as they are); existing contacts are updated, never downgraded. "
        "Each item gets a result; the same batch again finds everything unchanged.",
        request=IntegrationBatchSerializer,
        responses={200: IntegrationBatchResultSerializer},
    )
    def post(self, request, pk: int):
        data = _object_body(request)
        items = data.get("contacts")
        if isinstance(items, list) and len(items) > INTAKE_BATCH_MAX:
            raise ValidationError(
                {
                    "contacts": [
                        f"At most {INTAKE_BATCH_MAX:,} contacts a request; got {len(items):,}. "
                        "Split the batch."
                    ]
                }
            )
        serializer = IntegrationBatchSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        batch = connected_app_contacts_upsert(
            app=request.auth, items=serializer.validated_data["contacts"]
        )
        return Response(IntegrationBatchResultSerializer(batch).data)


class AdLeadsView(APIView):
    authentication_classes = [AdAccountTokenAuthentication]
    permission_classes = [IsTokenHolderOfThisUrl]
    throttle_classes = [IntakeThrottle]
    throttle_scope = APPS_SCOPE
    holder_model = AdAccount

    @extend_schema(
        tags=[INTAKE_TAG],
        summary='Receive ads leads (one, or many under "leads")',
        description=f"Authenticated by the ad account's webhook token (`Authorization: Bearer "
        f"<token>`). Up to {ADS_BATCH_MAX} leads; each is taken once per platform lead id (a "
        'repeat answers "duplicate" and changes nothing). New contacts get the ad account\'s '
        "marketing setting.",
        request=AdLeadsSerializer,
        responses={200: AdLeadsResultSerializer},
    )
    def post(self, request, pk: int):
        data = _object_body(request)
        if "leads" not in data:
            data = {"leads": [data]}
        serializer = AdLeadsSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        results = []
        for lead in serializer.validated_data["leads"]:
            lead = dict(lead)
            lead_id = lead.pop("lead_id")
            properties = lead.pop("properties", {})
            fields = {k: v for k, v in lead.items() if v not in ("", None)}
            row, intake = ad_lead_receive(
                ad_account=request.auth,
                lead_id=lead_id,
                data=fields,
                properties=properties,
            )
            status = "duplicate" if intake is None else ("created" if intake.created else "updated")
            results.append({"lead_id": lead_id, "status": status, "contact_id": row.contact_id})
        return Response(AdLeadsResultSerializer({"results": results}).data)
