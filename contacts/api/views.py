"""The contacts API: interfaces over contacts.selectors and contacts.services.

Idempotency: a client key (body `idempotency_key` or header `Idempotency-Key`) is
stored as "api:<user id>:<key>", so two clients never collide on a key. A retry
answers the first call's body unchanged, with the header `Idempotent-Replayed: true`.

The bulk change "by filter" builds its queryset with the database's clock (`Now()`)
rather than a Python datetime: the service fingerprints a request by its SQL and
parameters, and a moving "now" parameter would turn every retry into a conflict.
"""

from __future__ import annotations

import json

from django.db.models.functions import Now
from django.http import StreamingHttpResponse
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, serializers, viewsets
from rest_framework import status as http
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from contacts.api.serializers import (
    IDEMPOTENCY_KEY_MAX,
    AdAudienceSerializer,
    BulkMarketingStatusChangeSerializer,
    CommunicationSerializer,
    ContactCreateSerializer,
    ContactImportCreateSerializer,
    ContactImportSerializer,
    ContactListSerializer,
    ContactSerializer,
    ContactStatusChangeResultSerializer,
    HeldSerializer,
    MarketingEmailSendResultSerializer,
    MarketingEmailSerializer,
    MarketingStatusChangeSerializer,
    MembershipChangeSerializer,
    MembershipRequestSerializer,
    SendBreakdownSerializer,
    SourceSerializer,
    StatusChangeResultSerializer,
    StatusHistorySerializer,
    StatusPreviewSerializer,
)
from contacts.filters import ContactFilter
from contacts.models import (
    AdAudience,
    Communication,
    ContactList,
    MarketingEmail,
    MarketingStatus,
    StatusSourceType,
)
from contacts.selectors import (
    EXPORT_HEADER,
    contact_exists,
    contact_list,
    contact_status_history,
    marketing_email_audience,
    marketing_send_breakdown,
    source_for_manual_entry,
    source_list,
)
from contacts.services import (
    SET_MARKETING,
    SET_NON_MARKETING,
    AlreadySent,
    ChangeHeld,
    IdempotencyConflict,
    LockedSourceError,
    SendRefused,
    SourceInUse,
    StatusChangeResult,
    StatusSource,
    ad_audience_add,
    ad_audience_remove,
    communication_send,
    contact_create,
    contact_list_add,
    contact_list_remove,
    contact_update,
    contacts_creation_policy,
    contacts_delete,
    contacts_set_marketing,
    contacts_set_non_marketing,
    contacts_status_preview,
    marketing_email_create,
    marketing_email_delete,
    marketing_email_send,
    marketing_email_update,
    source_create,
    source_delete,
    source_update,
)
from contacts.views import export_response
from crm.api import MARKETING_STATUS_PERMISSION, CanChangeMarketingStatus, requires
from crm.exceptions import Conflict

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


class ContactFilterBackend(DjangoFilterBackend):
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
        description="Its marketing status is its source's default unless `marketing` is "
        "given (true needs contacts.change_marketing_status; locked sources refuse it).",
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
        status_source = None
        try:
            # The one creation rule: a locked source refuses marketing, whoever asks (400).
            contacts_creation_policy(source=source, requested_marketing=marketing)
        except LockedSourceError as exc:
            raise ValidationError({"marketing": [str(exc)]}) from exc
        if marketing:
            if not request.user.has_perm(MARKETING_STATUS_PERMISSION):
                raise PermissionDenied(
                    "Creating a marketing contact needs the permission "
                    f'{MARKETING_STATUS_PERMISSION}; leave out "marketing" to use the '
                    "source's default."
                )
            # The user chose the status: the ledger says so (not the source's default).
            status_source = _api_source(request.user)
        try:
            contact = contact_create(
                email=fields.pop("email"),
                source=source,
                actor=request.user,
                marketing=marketing,
                status_source=status_source,
                **fields,
            )
        except LockedSourceError as exc:
            raise ValidationError({"marketing": [str(exc)]}) from exc
        return Response(self._render(contact), status=http.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        contact = self.get_object()
        serializer = self.get_serializer(
            contact, data=request.data, partial=kwargs.get("partial", False)
        )
        serializer.is_valid(raise_exception=True)
        contact = contact_update(contact=contact, **serializer.validated_data)
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
        contact.refresh_from_db()
        self.now = timezone.now()
        return _result_response(result, client_key, contact=self._render(contact))

    @extend_schema(
        summary="Set many contacts' marketing status (by ids or by filter), or preview it",
        operation_id="contacts_marketing_status_bulk",
        request=BulkMarketingStatusChangeSerializer,
        responses={
            200: PolymorphicProxySerializer(
                component_name="BulkStatusChangeResponse",
                serializers=[StatusChangeResultSerializer, StatusPreviewSerializer],
                resource_type_field_name=None,
            ),
            202: OpenApiResponse(HeldSerializer, description="Held for approval (guardrails)."),
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
        if data["preview"]:
            operation = SET_MARKETING if status == MarketingStatus.MARKETING else SET_NON_MARKETING
            preview = contacts_status_preview(contacts=target, operation=operation)
            return Response(StatusPreviewSerializer(preview).data)
        client_key = _client_key(request, data.get("idempotency_key"))
        try:
            result = _change_status(
                status=status, contacts=target, request=request, client_key=client_key
            )
        except Held as held:
            return held.response()
        return _result_response(result, client_key)

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


# --- imports ---


def _import_response(contact_import, request, status=http.HTTP_200_OK) -> Response:
    return Response(
        ContactImportSerializer(contact_import, context={"request": request}).data, status=status
    )


class ContactImportViewSet(viewsets.ReadOnlyModelViewSet):
    """CSV imports: upload (with the preview), commit, progress and row errors.

    POST needs contacts.add_contactimport (GET contacts.view_contactimport); a marketing
    import also contacts.change_marketing_status, checked before anything is stored.
    """

    lookup_value_regex = r"[0-9]{1,18}"
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    def get_queryset(self):
        from contacts.selectors import contact_import_list

        return contact_import_list()

    def get_serializer_class(self):
        return ContactImportCreateSerializer if self.action == "create" else ContactImportSerializer

    def _check_marketing(self, marketing: bool) -> None:
        if marketing and not self.request.user.has_perm(MARKETING_STATUS_PERMISSION):
            raise PermissionDenied(
                "A marketing import needs the permission "
                f"{MARKETING_STATUS_PERMISSION}; import without “marketing”."
            )

    @extend_schema(
        summary="Upload a CSV and preview its import",
        description="Stores the file, maps its columns (by their names, then `mapping`) and "
        "answers the preview: rows, new, updated, unchanged, invalid, duplicates, how many "
        "become marketing and the billing impact. Nothing is imported until the commit. "
        "A file over IMPORT_MAX_BYTES, not UTF-8, or without an email column is refused "
        "(400) and nothing is stored.",
        request={"multipart/form-data": ContactImportCreateSerializer},
        responses={201: ContactImportSerializer},
    )
    def create(self, request, *args, **kwargs):
        from contacts.services import (
            ImportFileError,
            contact_import_create,
            contact_import_discard,
            contact_import_preview,
        )

        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        self._check_marketing(data["marketing"])
        upload = data["file"]
        contact_import = contact_import_create(
            file=upload,
            file_name=upload.name,
            actor=request.user,
            source=data.get("source"),
            mapping=data.get("mapping"),
            marketing=data["marketing"],
        )
        try:
            contact_import = contact_import_preview(
                contact_import=contact_import, actor=request.user
            )
        except ImportFileError:
            contact_import_discard(contact_import=contact_import)  # a broken file: keep nothing
            raise
        return _import_response(contact_import, request, http.HTTP_201_CREATED)

    def retrieve(self, request, *args, **kwargs):
        from contacts.services import contact_import_sync

        return _import_response(contact_import_sync(contact_import=self.get_object()), request)

    @extend_schema(
        summary="Commit a previewed import (runs in the background)",
        description="Idempotent: committing again answers the import as it is.",
        request=None,
        responses={202: ContactImportSerializer},
    )
    @action(detail=True, methods=["post"])
    def commit(self, request, pk=None):
        from contacts.services import contact_import_commit

        contact_import = self.get_object()
        self._check_marketing(contact_import.marketing)
        contact_import = contact_import_commit(contact_import=contact_import, actor=request.user)
        contact_import.refresh_from_db()
        return _import_response(contact_import, request, http.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="An import's row errors, as CSV (line, column, message)",
        responses={(200, "text/csv"): OpenApiResponse(description="CSV")},
    )
    @action(detail=True, methods=["get"], url_path="errors")
    def errors(self, request, pk=None):
        return import_errors_csv_response(self.get_object())


def import_errors_csv_response(contact_import) -> StreamingHttpResponse:
    """Row errors streamed as CSV, in file order (the admin uses it too)."""
    import csv

    from contacts.selectors import import_row_errors

    class Echo:
        def write(self, value):
            return value

    writer = csv.writer(Echo())
    rows = import_row_errors(contact_import_id=contact_import.pk).values_list(
        "line", "column", "message"
    )

    def lines():
        yield writer.writerow(["line", "column", "message"])
        for row in rows.iterator(chunk_size=2_000):
            yield writer.writerow(row)

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="import-{contact_import.pk}-errors.csv"'
    )
    return response


# --- communications: export, marketing email, ad audiences, lists, communications ---


class CSVRenderer(BaseRenderer):
    """Lets a client ask for text/csv (the export streams it itself); errors still render."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return json.dumps(data).encode() if data is not None else b""


class ContactExportView(GenericAPIView):
    """GET /api/contacts/export/: every contact the list's filters match, as CSV."""

    filter_backends = [ContactFilterBackend]
    filterset_class = ContactFilter
    renderer_classes = [JSONRenderer, CSVRenderer]
    pagination_class = None

    def get_queryset(self):
        return contact_list()

    def initial(self, request, *args, **kwargs):
        self.now = timezone.now()
        super().initial(request, *args, **kwargs)

    @extend_schema(
        summary="Export contacts as CSV (streamed)",
        description="The same filters as the contacts list. Columns: "
        + ", ".join(EXPORT_HEADER)
        + ". Text cells starting with = + - @ (or tab / carriage return) get a leading "
        "quote so a spreadsheet shows them as text, not as a formula.",
        filters=True,
        responses={(200, "text/csv"): OpenApiTypes.STR},
    )
    def get(self, request):
        return export_response(self.filter_queryset(self.get_queryset()), self.now)


def _membership_target(data: dict):
    if "ids" in data:
        return data["ids"]
    return ContactFilter(data=data["filter"], queryset=contact_list(), now=Now()).qs


def _send_refused(error: SendRefused):
    return Conflict(str(error))


@extend_schema_view(
    list=extend_schema(summary="List marketing emails"),
    retrieve=extend_schema(summary="A marketing email"),
    create=extend_schema(
        summary="Create a marketing email (a draft)",
        description="The body must contain {unsubscribe_url}. The audience is a contact "
        "filter (audience_filter) or a static list (audience_list), not both.",
    ),
    update=extend_schema(summary="Replace a draft marketing email (409 once sending)"),
    partial_update=extend_schema(summary="Change a draft marketing email (409 once sending)"),
    destroy=extend_schema(summary="Delete a draft marketing email (409 once sending)"),
)
class MarketingEmailViewSet(viewsets.ModelViewSet):
    serializer_class = MarketingEmailSerializer
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self):
        return MarketingEmail.objects.all()

    def perform_create(self, serializer):
        serializer.instance = marketing_email_create(**serializer.validated_data)

    def perform_update(self, serializer):
        try:
            serializer.instance = marketing_email_update(
                email=serializer.instance, **serializer.validated_data
            )
        except SendRefused as error:
            raise _send_refused(error) from error

    def perform_destroy(self, instance):
        try:
            marketing_email_delete(email=instance)
        except SendRefused as error:
            raise _send_refused(error) from error

    @extend_schema(
        summary="Who would receive it, and why the others would not",
        description="Audience size, will receive, excluded by reason (each excluded contact "
        "once: non-marketing, then unsubscribed, then bounced) and per reason with overlaps "
        "(unsubscribed_any, bounced_any). One aggregate query; nothing is written.",
        responses=SendBreakdownSerializer,
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def preview(self, request, pk=None):
        email = self.get_object()
        breakdown = marketing_send_breakdown(
            contacts=marketing_email_audience(email=email), email=email
        )
        return Response(SendBreakdownSerializer(breakdown.as_dict()).data)

    @extend_schema(
        summary="Send it (in the background)",
        description="Idempotent: a draft starts sending; a sending email resumes (only the "
        "rest is sent); a sent email answers 409 and sends nothing. Only marketing, "
        "subscribed, unbounced contacts receive it, checked again at send time.",
        request=None,
        responses={
            202: MarketingEmailSendResultSerializer,
            409: OpenApiResponse(description="Already sent; nothing more was sent."),
        },
    )
    @action(
        detail=True,
        methods=["post"],
        permission_classes=[
            requires(
                "contacts.send_marketingemail",
                "contacts.view_marketingemail",
                message="Sending marketing email needs the permission "
                "contacts.send_marketingemail.",
            )
        ],
    )
    def send(self, request, pk=None):
        email = self.get_object()
        try:
            outcome = marketing_email_send(email=email, actor=request.user)
        except AlreadySent as error:
            raise _send_refused(error) from error
        email.refresh_from_db()
        data = {
            "status": email.status,
            "breakdown": SendBreakdownSerializer(outcome.breakdown.as_dict()).data,
            "email": MarketingEmailSerializer(email).data,
        }
        return Response(data, status=http.HTTP_202_ACCEPTED)


class _MembersMixin:
    """POST {id}/members/ (add) and {id}/members/remove/, by ids or filter, with preview."""

    add_service = None
    remove_service = None
    owner_argument = ""

    def _members(self, request, service):
        owner = self.get_object()
        serializer = MembershipRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        change = service(
            **{self.owner_argument: owner},
            contacts=_membership_target(data),
            preview=data["preview"],
        )
        return Response(MembershipChangeSerializer(change.as_dict()).data)


def _members_actions(change_permission: str, noun: str, refuse_note: str):
    """The add/remove actions of a membership viewset, with their permission and schema."""
    permission = requires(change_permission, "contacts.view_contact")

    @extend_schema(
        summary=f"Add contacts to the {noun}",
        description=f"By ids or by filter; preview=true only counts. {refuse_note}",
        request=MembershipRequestSerializer,
        responses=MembershipChangeSerializer,
    )
    @action(detail=True, methods=["post"], permission_classes=[permission], url_path="members")
    def members(self, request, pk=None):
        return self._members(request, type(self).add_service)

    @extend_schema(
        summary=f"Remove contacts from the {noun}",
        request=MembershipRequestSerializer,
        responses=MembershipChangeSerializer,
    )
    @action(
        detail=True,
        methods=["post"],
        permission_classes=[permission],
        url_path="members/remove",
    )
    def remove_members(self, request, pk=None):
        return self._members(request, type(self).remove_service)

    return members, remove_members


@extend_schema_view(
    list=extend_schema(summary="List ad audiences"),
    retrieve=extend_schema(summary="An ad audience"),
    create=extend_schema(summary="Create an ad audience"),
    update=extend_schema(summary="Replace an ad audience"),
    partial_update=extend_schema(summary="Change an ad audience"),
    destroy=extend_schema(summary="Delete an ad audience (and its memberships)"),
)
class AdAudienceViewSet(_MembersMixin, viewsets.ModelViewSet):
    serializer_class = AdAudienceSerializer
    lookup_value_regex = r"[0-9]{1,18}"
    owner_argument = "audience"
    add_service = staticmethod(ad_audience_add)
    remove_service = staticmethod(ad_audience_remove)
    members, remove_members = _members_actions(
        "contacts.change_adaudience",
        "ad audience",
        "Only marketing contacts are added: the others are refused and counted "
        "(refused_non_marketing). Unsubscribed or bounced marketing contacts are accepted.",
    )

    def get_queryset(self):
        return AdAudience.objects.all()


@extend_schema_view(
    list=extend_schema(summary="List static contact lists"),
    retrieve=extend_schema(summary="A contact list"),
    create=extend_schema(summary="Create a contact list"),
    update=extend_schema(summary="Replace a contact list"),
    partial_update=extend_schema(summary="Change a contact list"),
    destroy=extend_schema(summary="Delete a contact list (refused while an email uses it)"),
)
class ContactListViewSet(_MembersMixin, viewsets.ModelViewSet):
    serializer_class = ContactListSerializer
    lookup_value_regex = r"[0-9]{1,18}"
    owner_argument = "contact_list"
    add_service = staticmethod(contact_list_add)
    remove_service = staticmethod(contact_list_remove)
    members, remove_members = _members_actions(
        "contacts.change_contactlist",
        "list",
        "Any contact may be on a list; the send guard decides who gets marketing email.",
    )

    def get_queryset(self):
        return ContactList.objects.all()


@extend_schema_view(
    list=extend_schema(summary="List non-marketing communications, newest first"),
    retrieve=extend_schema(summary="A communication"),
    create=extend_schema(
        summary="Send a non-marketing communication",
        description="Sales one-to-one, transactional, registration, chat transcript, ticket "
        "reply or feedback survey: reaches any contact (marketing or not, unsubscribed or "
        "not) and is logged with its type. 'marketing' is refused. A retry with the same "
        "idempotency_key (or Idempotency-Key header) returns the first log and sends nothing.",
        parameters=[IDEMPOTENCY_PARAMETER],
    ),
)
class CommunicationViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = CommunicationSerializer
    filterset_fields = ["contact", "type"]
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self):
        return Communication.objects.all()

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        client_key = _client_key(request, data.get("idempotency_key"))
        try:
            log = communication_send(
                contact=data["contact"],
                type=data["type"],
                subject=data["subject"],
                body=data["body"],
                actor=request.user,
                idempotency_key=f"api:{request.user.pk}:{client_key}" if client_key else None,
            )
        except SendRefused as error:
            raise ValidationError({"type": [str(error)]}) from error
        headers = {REPLAYED_HEADER: "true"} if log.replayed else {}
        code = http.HTTP_201_CREATED if not log.replayed else http.HTTP_200_OK
        return Response(self.get_serializer(log).data, status=code, headers=headers)
