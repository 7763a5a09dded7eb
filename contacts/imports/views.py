"""The streamed CSV export response, shared by the admin and the API."""

from __future__ import annotations

import itertools

from django.http import StreamingHttpResponse

from contacts.imports.export import contacts_export_csv, export_marked_incomplete
from crm.replica import replica_iter

# Pieces read before the response starts: the header and the first chunk of rows.
EXPORT_PRIMED_PIECES = 2


def export_response(queryset, now) -> StreamingHttpResponse:
    """The CSV export, streamed chunk by chunk (contacts.imports.export.contacts_export_csv).

    The first chunk is read before the response is returned: a query that fails (a
    filter the database refuses) fails here, as an error response, never as a 200 with
    a header-only file. A failure later in the stream ends the file with the export's
    "incomplete" line and aborts the transfer (`export_marked_incomplete`).
    """
    # Each chunk may read the replica (crm.replica): an export is a snapshot anyway.
    pieces = replica_iter(contacts_export_csv(contacts=queryset, at=now))
    primed = list(itertools.islice(pieces, EXPORT_PRIMED_PIECES))
    response = StreamingHttpResponse(
        itertools.chain(primed, export_marked_incomplete(pieces)),
        content_type="text/csv; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="contacts-{now:%Y%m%d-%H%M%S}.csv"'
    return response
