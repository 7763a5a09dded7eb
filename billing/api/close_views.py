"""Running the close through the API: the same service as the command, the beat task and
the admin's close page (billing.services.billing_close_periods), with the same permission."""

from __future__ import annotations

from dataclasses import asdict

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.admin.base import CLOSE_PERMISSION
from billing.api.serializers import CloseRequestSerializer, CloseResultSerializer
from billing.services import billing_close_periods
from crm.api import requires


def _detail(outcomes, *, dry_run: bool) -> str:
    if not outcomes:
        return "Nothing to close: every period that has ended is closed."
    counts = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    words = {
        "closed": "closed",
        "would_close": "would be closed",
        "already_closed": "already closed by another close",
        "held": "held: its ledger replay and counters disagree, so it has no invoice",
    }
    parts = [
        f"{count:,} period{'s' if count != 1 else ''} {words.get(status, status)}"
        for status, count in counts.items()
    ]
    prefix = "Dry run, nothing written: " if dry_run else ""
    return prefix + "; ".join(parts) + "."


class CloseView(APIView):
    permission_classes = [
        requires(CLOSE_PERMISSION, message=f"Closing periods needs {CLOSE_PERMISSION}.")
    ]

    @extend_schema(
        summary="Close every billing period that has ended",
        description="Applies the downgrades due at each period's end, checks the peak against "
        "the ledger and writes the invoice: one outcome per period. Safe to repeat: a period "
        "is closed once, so a second call answers no outcome. With dry_run, says what would "
        "be closed and invoiced and writes nothing.",
        request=CloseRequestSerializer,
        responses=CloseResultSerializer,
    )
    def post(self, request):
        serializer = CloseRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        dry_run = serializer.validated_data["dry_run"]
        as_of = serializer.validated_data.get("as_of")
        now = timezone.now()
        if as_of is not None and as_of > now:
            raise ValidationError(
                {"as_of": ["Only periods that have ended can be closed: give a past instant."]}
            )
        outcomes = billing_close_periods(as_of=as_of, dry_run=dry_run, at=now)
        body = {
            "dry_run": dry_run,
            "detail": _detail(outcomes, dry_run=dry_run),
            "outcomes": [asdict(outcome) for outcome in outcomes],
        }
        return Response(CloseResultSerializer(body).data)
