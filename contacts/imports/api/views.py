"""The imports API and the streamed CSV export."""

from __future__ import annotations

import json

from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
)
from rest_framework import status as http
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.generics import GenericAPIView
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response

from contacts.api.views import ContactFilterBackend
from contacts.filters import ContactFilter
from contacts.imports.api.serializers import (
    ContactImportCreateSerializer,
    ContactImportSerializer,
)
from contacts.imports.export import EXPORT_HEADER
from contacts.imports.views import export_response
from contacts.selectors import (
    contact_list,
)
from contacts.status.rules import MARKETING_STATUS_PERMISSION
from crm.parsers import MultiPartParser


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
    parser_classes = [MultiPartParser]  # a file upload

    def get_queryset(self):
        from contacts.imports.selectors import contact_import_list

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
        from contacts.imports.parsing import ImportFileError, ImportNotAllowed
        from contacts.imports.services import (
            contact_import_create,
            contact_import_discard,
            contact_import_preview,
        )

        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        self._check_marketing(data["marketing"])
        upload = data["file"]
        try:
            contact_import = contact_import_create(
                file=upload,
                file_name=upload.name,
                actor=request.user,
                source=data.get("source"),
                mapping=data.get("mapping"),
                marketing=data["marketing"],
                file_format=data.get("format") or None,
            )
        except ImportNotAllowed as error:  # a HubSpot status column mapped without the right
            raise PermissionDenied(str(error)) from error
        try:
            contact_import = contact_import_preview(
                contact_import=contact_import, actor=request.user
            )
        except ImportFileError:
            contact_import_discard(contact_import=contact_import)  # a broken file: keep nothing
            raise
        return _import_response(contact_import, request, http.HTTP_201_CREATED)

    def list(self, request, *args, **kwargs):
        from contacts.imports.models import ContactImport
        from crm.jobs import jobs_expire_stale

        jobs_expire_stale(model=ContactImport)  # running imports whose worker died
        return super().list(request, *args, **kwargs)

    def retrieve(self, request, *args, **kwargs):
        from contacts.imports.services import contact_import_sync

        return _import_response(contact_import_sync(contact_import=self.get_object()), request)

    @extend_schema(
        summary="Commit a previewed import (runs in the background)",
        description="Idempotent: committing again answers the import as it is.",
        request=None,
        responses={202: ContactImportSerializer},
    )
    @action(detail=True, methods=["post"])
    def commit(self, request, pk=None):
        from contacts.imports.services import contact_import_commit

        contact_import = self.get_object()
        self._check_marketing(contact_import.marketing)
        contact_import = contact_import_commit(contact_import=contact_import, actor=request.user)
        contact_import.refresh_from_db()
        return _import_response(contact_import, request, http.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Resume a failed import (runs in the background)",
        description="For a committed import that failed — its worker died (its lease ran out) "
        "or its job could not be queued. It goes on where it stopped and ends as an "
        "uninterrupted run would: what was saved is not saved twice. 400 while a worker "
        "still holds it, or when it has finished.",
        request=None,
        responses={
            202: ContactImportSerializer,
            400: OpenApiResponse(
                description="Not resumable: never committed, finished, or held by a worker."
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        from contacts.imports.services import contact_import_resume

        contact_import = self.get_object()
        self._check_marketing(contact_import.marketing)
        contact_import = contact_import_resume(contact_import=contact_import, actor=request.user)
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

    from contacts.imports.selectors import import_row_errors

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


class CSVRenderer(BaseRenderer):
    """Lets a client ask for text/csv (the export streams it itself; errors are JSON)."""

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

    def handle_exception(self, exc):
        # An error is JSON, as the schema documents it, even when CSV was asked for.
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = JSONRenderer.media_type
        return super().handle_exception(exc)

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
