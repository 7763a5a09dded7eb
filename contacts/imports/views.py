"""The streamed CSV export response, shared by the admin and the API."""

from __future__ import annotations

from django.http import StreamingHttpResponse

from contacts.imports.export import contacts_export_csv


def export_response(queryset, now) -> StreamingHttpResponse:
    """The CSV export, streamed chunk by chunk (contacts.selectors.contacts_export_csv)."""
    response = StreamingHttpResponse(
        contacts_export_csv(contacts=queryset, at=now), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="contacts-{now:%Y%m%d-%H%M%S}.csv"'
    return response
