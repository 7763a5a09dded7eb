"""The contacts API: contacts, sources and status changes."""

from __future__ import annotations

import uuid

from django.db import DatabaseError
from django.db.models.functions import Now
from django.utils import timezone
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers, viewsets
from rest_framework import status as http
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response

from contacts.api.serializers import (
    IDEMPOTENCY_KEY_MAX,
    BulkMarketingStatusChangeSerializer,
    BulkStatusChangeResponseSerializer,
    BulkStatusJobSerializer,
    ContactCreateSerializer,
    ContactSerializer,
    ContactStatusChangeResultSerializer,
    HeldSerializer,
    MarketingStatusChangeSerializer,
    SourceSerializer,
    StatusChangeResultSerializer,
    StatusHistorySerializer,
)
from contacts.filters import ContactFilter
from contacts.models import (
    MarketingStatus,
    StatusSourceType,
)
from contacts.selectors import (
    contact_exists,
    contact_list,
    source_for_manual_entry,
    source_list,
)
from contacts.services import (
    contact_create,
    contact_update,
    source_create,
    source_delete,
    source_update,
)
from contacts.status.bulk import (
    bulk_status_job_submit,
    bulk_status_job_sync,
    bulk_status_job_threshold,
)
from contacts.status.models import BulkStatusJob, StatusChangeRequest
from contacts.status.results import (
    SET_MARKETING,
    SET_NON_MARKETING,
    ChangeHeld,
    IdempotencyConflict,
    LockedSourceError,
    MarketingNotPermitted,
    SourceInUse,
    StatusChangeResult,
    StatusSource,
)
from contacts.status.rules import MARKETING_STATUS_PERMISSION
from contacts.status.selectors import contact_status_history
from contacts.status.services import (
    contacts_delete,
    contacts_set_marketing,
    contacts_set_non_marketing,
    contacts_status_preview,
)
from crm.admin import capped_count
from crm.api import StrictFilterBackend, requires
from crm.exceptions import Conflict

CanChangeMarketingStatus = requires(
    MARKETING_STATUS_PERMISSION,
    "contacts.view_contact",
    message=(
        "Changing the marketing status needs the permission "
        f"{MARKETING_STATUS_PERMISSION} (and contacts.view_contact)."
    ),
)

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

IDEMPOTENCY_PARAMETER = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    str,
    OpenApiParameter.HEADER,
    required=False,
    description="Same as the body's idempotency_key (if both are given they must agree).",
)


def _api_source(user) -> StatusSource:
    return StatusSource(StatusSourceType.API, id=str(user.pk), name=user.get_username())


def _client_key(request, body_key: str | None) -> str | None:
    """The client's idempotency key, from the body or the header (checked like the body's)."""
    header = (request.headers.get(IDEMPOTENCY_HEADER) or "").strip() or None
    if header:
        try:
            header = serializers.CharField(max_length=IDEMPOTENCY_KEY_MAX).run_validation(header)
        except ValidationError as exc:
            raise ValidationError({"idempotency_key": exc.detail}) from exc
    if header and body_key and header != body_key:
        raise ValidationError(
            {"idempotency_key": [f"The {IDEMPOTENCY_HEADER} header and idempotency_key differ."]}
        )
    return body_key or header


class Held(Exception):
    """The guardrails held a set-marketing for approval (contacts.services.ChangeHeld)."""

    def __init__(self, message: str, client_key: str | None):
        super().__init__(message)
        self.client_key = client_key

    def response(self) -> Response:
        data = {"held": True, "detail": str(self), "idempotency_key": self.client_key}
        return Response(HeldSerializer(data).data, status=http.HTTP_202_ACCEPTED)


def _change_status(*, status: str, contacts, request, client_key: str | None):
    """Run the change as the API user. Making contacts marketing goes through billing's
    guardrails (`guarded=True`): past a limit it is held for approval and nothing is
    written — the caller answers 202 with the reason (raised as `Held`)."""
    key = f"api:{request.user.pk}:{client_key}" if client_key else None
    common = {"contacts": contacts, "source": _api_source(request.user), "actor": request.user}
    try:
        if status == MarketingStatus.MARKETING:
            return contacts_set_marketing(**common, idempotency_key=key, guarded=True)
        return contacts_set_non_marketing(**common, idempotency_key=key)
    except ChangeHeld as exc:
        raise Held(str(exc), client_key) from exc
    except IdempotencyConflict as exc:
        # The service's message names the stored (namespaced) key; name the client's.
        raise Conflict(
            {
                "idempotency_key": [
                    f"The idempotency key {client_key!r} was already used for a different request."
                ]
            }
        ) from exc


def _result_response(result: StatusChangeResult, client_key: str | None, **extra) -> Response:
    data = dict(StatusChangeResultSerializer(result).data)
    data["idempotency_key"] = client_key
    data.update(extra)
    headers = {REPLAYED_HEADER: "true"} if result.replayed else {}
    return Response(data, headers=headers)


def _bulk_response(result: StatusChangeResult, client_key: str | None) -> Response:
    data = BulkStatusChangeResponseSerializer(
        BulkStatusChangeResponseSerializer.from_result(result, client_key)
    ).data
    headers = {REPLAYED_HEADER: "true"} if result.replayed else {}
    return Response(data, headers=headers)


def _job_response(job: BulkStatusJob, request, *, created: bool = False) -> Response:
    data = BulkStatusJobSerializer(job, context={"request": request}).data
    headers = {"Location": data["url"]}
    if not created:
        headers[REPLAYED_HEADER] = "true"
    return Response(data, status=http.HTTP_202_ACCEPTED, headers=headers)


class ContactFilterBackend(StrictFilterBackend):
    """Filters at the request's instant, the one the representation uses."""

    def get_filterset_kwargs(self, request, queryset, view):
        kwargs = super().get_filterset_kwargs(request, queryset, view)
        kwargs["now"] = getattr(view, "now", None)
        return kwargs


@extend_schema_view(
    list=extend_schema(
        summary="List contacts",
        description="Newest first, cursor-paginated (no total count).",
    ),
    retrieve=extend_schema(summary="A contact"),
    create=extend_schema(
        summary="Create a contact",
        description="With contacts.change_marketing_status its marketing status is its "
        "source's default unless `marketing` is given (locked sources refuse true); without "
        "the permission it is non-marketing whatever the source, and true is refused (403).",
        request=ContactCreateSerializer,
        responses={201: ContactSerializer},
    ),
    update=extend_schema(summary="Replace a contact's fields (not its status or source)"),
    partial_update=extend_schema(summary="Change some of a contact's fields"),
    destroy=extend_schema(
        summary="Delete a contact",
        description="A marketing contact lowers the live count at once; the period's peak stays.",
    ),
)
class ContactViewSet(viewsets.ModelViewSet):
    serializer_class = ContactSerializer
    filter_backends = [ContactFilterBackend]
    filterset_class = ContactFilter
    # Ids fit a BIGINT: a longer number is simply not found (instead of overflowing SQLite).
    lookup_value_regex = r"[0-9]{1,18}"

    def searched(self, request) -> bool:
        """A search reads its page as crm.planner.read_searched says (CreatedCursorPagination)."""
        return bool(request.query_params.get("search", "").strip())

    def get_queryset(self):
        return contact_list()

    def initial(self, request, *args, **kwargs):
        # One instant per request: filters and representations agree on "now".
        self.now = timezone.now()
        super().initial(request, *args, **kwargs)

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "now": getattr(self, "now", None)}

    def get_serializer_class(self):
        return ContactCreateSerializer if self.action == "create" else ContactSerializer

    def _render(self, contact) -> dict:
        return ContactSerializer(contact, context=self.get_serializer_context()).data

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        marketing = fields.pop("marketing", None)
        source = fields.pop("source", None) or source_for_manual_entry()
        try:
            # The one creation rule decides, given the API user: a locked source refuses
            # marketing whoever asks (400); without the status permission the contact is
            # non-marketing, and asking for marketing is refused (403).
            contact = contact_create(
                email=fields.pop("email"),
                source=source,
                actor=request.user,
                marketing=marketing,
                status_source=_api_source(request.user),
                **fields,
            )
        except LockedSourceError as exc:
            raise ValidationError({"marketing": [str(exc)]}) from exc
        except MarketingNotPermitted as exc:
            raise PermissionDenied(str(exc)) from exc
        return Response(self._render(contact), status=http.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        contact = self.get_object()
        serializer = self.get_serializer(
            contact, data=request.data, partial=kwargs.get("partial", False)
        )
        serializer.is_valid(raise_exception=True)
        try:
            contact = contact_update(contact=contact, **serializer.validated_data)
        except DatabaseError:
            # What Django raises when the row to update is gone: a concurrent delete.
            if contact_exists(contact_id=contact.pk):
                raise
            raise NotFound("This contact was deleted while it was being changed.") from None
        return Response(self._render(contact))

    def destroy(self, request, *args, **kwargs):
        contact = self.get_object()
        contacts_delete(contacts=contact, actor=request.user, source=_api_source(request.user))
        return Response(status=http.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Set one contact's marketing status",
        operation_id="contacts_marketing_status",
        description="marketing: at once (a pending downgrade is cancelled). non_marketing: "
        "from the next update date; until then the contact stays marketing and billable.",
        request=MarketingStatusChangeSerializer,
        responses={
            200: ContactStatusChangeResultSerializer,
            202: OpenApiResponse(HeldSerializer, description="Held for approval (guardrails)."),
        },
        parameters=[IDEMPOTENCY_PARAMETER],
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="marketing-status",
        permission_classes=[CanChangeMarketingStatus],
        filter_backends=[],
    )
    def marketing_status(self, request, pk=None):
        contact = self.get_object()
        serializer = MarketingStatusChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        client_key = _client_key(request, serializer.validated_data.get("idempotency_key"))
        try:
            result = _change_status(
                status=serializer.validated_data["status"],
                contacts=contact.pk,
                request=request,
                client_key=client_key,
            )
        except Held as held:
            return held.response()
        # Read again for the answer; a concurrent delete may have removed it meanwhile.
        contact = contact_list().filter(pk=contact.pk).first()
        if contact is None:
            raise NotFound("This contact was deleted while its status was being changed.")
        self.now = timezone.now()
        return _result_response(result, client_key, contact=self._render(contact))

    @extend_schema(
        summary="Set many contacts' marketing status (by ids or by filter), or preview it",
        operation_id="contacts_marketing_status_bulk",
        description="One answer shape with or without `preview` (its `preview` flag says which). "
        "By filter, a change over more contacts than the background threshold "
        "(BULK_STATUS_JOB_THRESHOLD, default 1,000) runs as a job: 202 with the job, whose "
        "`url` is polled (GET /api/contacts/marketing-status/jobs/{id}/). A retry with the "
        "same idempotency key returns the same job. A set-marketing past the guardrails is "
        "held for approval: 202 with `held`.",
        request=BulkMarketingStatusChangeSerializer,
        responses={
            200: BulkStatusChangeResponseSerializer,
            202: PolymorphicProxySerializer(
                component_name="BulkStatusChangeAccepted",
                serializers=[BulkStatusJobSerializer, HeldSerializer],
                resource_type_field_name=None,
            ),
        },
        parameters=[IDEMPOTENCY_PARAMETER],
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="marketing-status",
        permission_classes=[CanChangeMarketingStatus],
        filter_backends=[],
        pagination_class=None,
    )
    def bulk_marketing_status(self, request):
        serializer = BulkMarketingStatusChangeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if "ids" in data:
            target = data["ids"]
        else:
            target = ContactFilter(data=data["filter"], queryset=contact_list(), now=Now()).qs
        status = data["status"]
        operation = SET_MARKETING if status == MarketingStatus.MARKETING else SET_NON_MARKETING
        if data["preview"]:
            preview = contacts_status_preview(contacts=target, operation=operation)
            return Response(
                BulkStatusChangeResponseSerializer(
                    BulkStatusChangeResponseSerializer.from_preview(preview)
                ).data
            )
        client_key = _client_key(request, data.get("idempotency_key"))
        if "filter" in data:
            job = self._bulk_job(data["filter"], operation, client_key)
            if job is not None:
                return job
        try:
            result = _change_status(
                status=status, contacts=target, request=request, client_key=client_key
            )
        except Held as held:
            return held.response()
        return _bulk_response(result, client_key)

    def _bulk_job(self, params: dict, operation: str, client_key: str | None):
        """A change by filter over more contacts than the threshold, as a background job:
        202 with the job. None for a change small enough to run now, or one already
        answered synchronously under the same key (its retry replays that answer)."""
        request = self.request
        key = f"api:{request.user.pk}:{client_key}" if client_key else None
        if key and StatusChangeRequest.objects.filter(idempotency_key=key).exists():
            return None
        known = key is not None and BulkStatusJob.objects.filter(idempotency_key=key).exists()
        now = timezone.now()
        target = ContactFilter(data=params, queryset=contact_list(), now=now).qs
        if not known:
            threshold = bulk_status_job_threshold()
            # Counts at most threshold + 1 contacts: no full count of a big match.
            if capped_count(target, threshold) <= threshold:
                return None
        try:
            job, created = bulk_status_job_submit(
                contacts=target,
                operation=operation,
                criteria={"filter": params},
                origin="api",
                actor=request.user,
                idempotency_key=key or f"api-job:{uuid.uuid4()}",
                as_of=now,
            )
        except IdempotencyConflict as exc:
            raise Conflict(
                {
                    "idempotency_key": [
                        f"The idempotency key {client_key!r} was already used for a different "
                        "request."
                    ]
                }
            ) from exc
        return _job_response(job, request, created=created)

    @extend_schema(
        summary="A bulk status change running in the background",
        description="Its status (queued, running, done, held, rejected, failed) and counts. "
        "Reading it also notices a worker that died (the job is then failed and can be "
        "resumed in the admin) and an approval decided for its held part.",
        responses={200: BulkStatusJobSerializer},
    )
    @action(
        detail=False,
        methods=["get"],
        url_path=r"marketing-status/jobs/(?P<job_id>[0-9]{1,18})",
        url_name="bulk-marketing-status-job",
        permission_classes=[requires("contacts.view_bulkstatusjob")],
        filter_backends=[],
        pagination_class=None,
    )
    def bulk_marketing_status_job(self, request, job_id=None):
        job = BulkStatusJob.objects.filter(pk=int(job_id)).first()
        if job is None:
            raise NotFound("No bulk status change with this id.")
        job = bulk_status_job_sync(job=job)
        return Response(BulkStatusJobSerializer(job, context={"request": request}).data)

    @extend_schema(
        summary="A contact's marketing-status ledger, newest first",
        description="Readable after the contact is deleted (ledger rows outlive it); 404 only "
        "when neither the contact nor any row exists.",
        responses=StatusHistorySerializer(many=True),
    )
    @action(
        detail=True,
        methods=["get"],
        url_path="status-history",
        permission_classes=[requires("contacts.view_statuschange")],
        filter_backends=[],
    )
    def status_history(self, request, pk=None):
        contact_id = int(pk)
        page = self.paginate_queryset(contact_status_history(contact_id=contact_id))
        first_page = not request.query_params.get(self.paginator.cursor_query_param)
        if not page and first_page and not contact_exists(contact_id=contact_id):
            raise NotFound("No contact and no status history with this id.")
        return self.get_paginated_response(StatusHistorySerializer(page, many=True).data)


@extend_schema_view(
    list=extend_schema(summary="List sources"),
    retrieve=extend_schema(summary="A source"),
    create=extend_schema(
        summary="Create a source",
        description="default_marketing defaults to the kind's default (form, external form "
        "and ads: true). Locked kinds cannot default to marketing.",
    ),
    update=extend_schema(summary="Replace a source"),
    partial_update=extend_schema(summary="Change a source"),
    destroy=extend_schema(
        summary="Delete a source",
        description="Refused (409) while contacts record it.",
        responses={204: None, 409: OpenApiResponse(description="The source still has contacts.")},
    ),
)
class SourceViewSet(viewsets.ModelViewSet):
    """Sources and their defaults (writes through contacts.services)."""

    serializer_class = SourceSerializer
    filterset_fields = ["kind"]
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self):
        return source_list()

    def perform_create(self, serializer):
        serializer.instance = source_create(**serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = source_update(source=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance):
        try:
            source_delete(source=instance)
        except SourceInUse as error:
            raise Conflict(str(error)) from error
