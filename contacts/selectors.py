"""Reads of contacts, the ledger and the billable counters."""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from contacts.models import (
    Contact,
    EmailSend,
    MarketingEmail,
    MarketingEmailStatus,
    MarketingStatus,
    PeriodUsage,
    Source,
    StatusChange,
)
from crm.calendar import BillingCalendar


@dataclass(frozen=True)
class UsageSnapshot:
    period_start: dt.datetime
    period_end: dt.datetime
    opening_count: int
    live_count: int
    peak_count: int
    pending_downgrades: int

    @property
    def next_update(self) -> dt.datetime:
        return self.period_end


def usage_current(*, at: dt.datetime | None = None) -> UsageSnapshot:
    """The live billable count and the running peak of the period containing `at`. O(1).

    When nothing has changed since the period began, its row does not exist yet:
    it is derived from the last period's row (live less its scheduled downgrades).
    """
    at = at or timezone.now()
    calendar = BillingCalendar.for_account()
    start, end = calendar.period_bounds(at)
    row = PeriodUsage.objects.filter(period_start__lte=at).order_by("-period_start").first()
    if row is not None and row.period_start == start:
        return UsageSnapshot(
            period_start=start,
            period_end=end,
            opening_count=row.opening_count,
            live_count=row.live_count,
            peak_count=row.peak_count,
            pending_downgrades=row.scheduled_downgrades,
        )
    opening = row.live_count - row.scheduled_downgrades if row is not None else 0
    return UsageSnapshot(
        period_start=start,
        period_end=end,
        opening_count=opening,
        live_count=opening,
        peak_count=opening,
        pending_downgrades=0,
    )


def contact_status_history(*, contact_id: int) -> QuerySet[StatusChange]:
    # statuschange_contact_idx
    return (
        StatusChange.objects.filter(contact_id=contact_id)
        .select_related("actor", "request")
        .order_by("-id")
    )


def contact_list() -> QuerySet[Contact]:
    return Contact.objects.select_related("source")


def source_list() -> QuerySet[Source]:
    return Source.objects.all()


def source_for_manual_entry() -> Source:
    """The source recorded on contacts created by hand in the admin or the API."""
    from contacts.models import SourceKind

    source, _ = Source.objects.get_or_create(
        name="Created by hand", defaults={"kind": SourceKind.MANUAL, "default_marketing": False}
    )
    return source


def contact_exists(*, contact_id: int) -> bool:
    return Contact.objects.filter(pk=contact_id).exists()


@dataclass(frozen=True)
class LedgerReplay:
    """The billable counts of [start, end) recomputed from the ledger alone."""

    start: dt.datetime
    end: dt.datetime
    opening_count: int  # at the first instant, start
    peak_count: int  # the maximum at any instant of the period, start included
    closing_count: int  # just before end


def ledger_replay(*, start: dt.datetime, end: dt.datetime) -> LedgerReplay:
    """Replay the ledger: the billable count at every instant of [start, end).

    The opening count is the sum of `delta` up to and including `start`; inside the
    period, rows at one instant are summed before a running sum (a window function,
    on PostgreSQL and SQLite 3.25+), so a -1 and a +1 at the same instant never make
    a false peak. Only the period's own rows are windowed (statuschange_effective_idx).
    """
    from django.db import connection

    table = StatusChange._meta.db_table
    adapt = connection.ops.adapt_datetimefield_value
    # One pass over the period's rows gives both the highest running sum and the last
    # one (the period's net change: rows with delta 0 change nothing).
    sql = f"""
        SELECT
            (SELECT COALESCE(SUM(delta), 0) FROM {table} WHERE effective_at <= %s),
            running.highest, running.net
        FROM (
            SELECT MAX(c) AS highest, SUM(d) AS net FROM (
                SELECT d, SUM(d) OVER (ORDER BY effective_at ROWS UNBOUNDED PRECEDING) AS c
                FROM (
                    SELECT effective_at, SUM(delta) AS d FROM {table}
                    WHERE effective_at > %s AND effective_at < %s AND delta <> 0
                    GROUP BY effective_at
                ) AS per_instant
            ) AS rising
        ) AS running
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [adapt(start), adapt(start), adapt(end)])
        opening, highest_rise, period_sum = cursor.fetchone()
    opening = int(opening or 0)
    return LedgerReplay(
        start=start,
        end=end,
        opening_count=opening,
        peak_count=opening + max(0, int(highest_rise or 0)),
        closing_count=opening + int(period_sum or 0),
    )


# --- intake ---


def form_public(*, slug: str):
    """An active form by slug, or None (contacts_form slug unique index)."""
    from contacts.models import Form

    return Form.objects.select_related("source").filter(slug=slug, is_active=True).first()


def chatflow_public(*, chatflow_id: int):
    from contacts.models import Chatflow

    return Chatflow.objects.select_related("source").filter(pk=chatflow_id, is_active=True).first()


# --- imports ---


def contact_import_list() -> QuerySet:
    from contacts.models import ContactImport

    return ContactImport.objects.select_related("source", "created_by", "committed_by")


def import_row_errors(*, contact_import_id: int) -> QuerySet:
    """An import's row errors in file order (importrowerror_line_idx)."""
    from contacts.models import ImportRowError

    return ImportRowError.objects.filter(contact_import_id=contact_import_id).order_by("line", "id")


def import_sources() -> QuerySet[Source]:
    from contacts.models import SourceKind

    return Source.objects.filter(kind=SourceKind.IMPORT)


# --- communications: export, the marketing-send breakdown ---


# Rows per export query: `WHERE id > last ORDER BY id LIMIT 2000` walks the primary key, so
# each chunk costs the same wherever it starts (no OFFSET), and memory holds one chunk.
EXPORT_CHUNK_SIZE = 2_000

# (column header, the values_list field it is read from), in the export's order.
_EXPORT_COLUMNS = [
    ("id", "pk"),
    ("email", "email"),
    ("first_name", "first_name"),
    ("last_name", "last_name"),
    ("company", "company"),
    ("phone", "phone"),
    ("lifecycle_stage", "lifecycle_stage"),
    ("lead_status", "lead_status"),
    ("contact_type", "contact_type"),
    ("unsubscribed", "unsubscribed"),
    ("hard_bounced", "hard_bounced"),
    ("lead_score", "lead_score"),
    ("last_engaged_at", "last_engaged_at"),
    ("source", "source__name"),
    ("marketing_status", "marketing_status"),  # the effective status (see below)
    ("non_marketing_from", "marketing_until"),  # only a pending downgrade's date
    ("marketing_reason_type", "marketing_reason_type"),
    ("marketing_reason_id", "marketing_reason_id"),
    ("marketing_reason_name", "marketing_reason_name"),
    ("created_at", "created_at"),
]
EXPORT_HEADER = [header for header, _ in _EXPORT_COLUMNS]
_EXPORT_FIELDS = [field for _, field in _EXPORT_COLUMNS]
# A cell starting with one of these is a formula to Excel, LibreOffice and Google Sheets
# (OWASP "CSV injection"); tab and carriage return start one in some of them too.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: str) -> str:
    """A text cell a spreadsheet will show as text: a leading quote defuses a formula."""
    return "'" + value if value.startswith(FORMULA_PREFIXES) else value


def _text(value: str) -> str:
    return csv_safe(value) if value else ""


def _instant(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).isoformat() if value is not None else ""


def contacts_export_rows(
    *, contacts: QuerySet[Contact], at: dt.datetime | None = None
) -> Iterator[list[str]]:
    """The export's rows (header first), chunk by chunk in id order: constant memory.

    Keyset pagination: each chunk is `id > <last id of the previous chunk>`, never an
    OFFSET, and never a list of the whole queryset. `marketing_status` is the effective
    status at `at` (a passed pending date reads non-marketing), `non_marketing_from` the
    pending downgrade's date. Text cells are made formula-safe (`csv_safe`). Each row is
    unpacked and formatted in one expression: this loop is the export's hot path.
    """
    at = at or timezone.now()
    marketing, non_marketing = MarketingStatus.MARKETING.value, MarketingStatus.NON_MARKETING.value
    yield list(EXPORT_HEADER)
    rows = contacts.order_by("pk").values_list(*_EXPORT_FIELDS)
    last = 0
    while True:
        chunk = list(rows.filter(pk__gt=last)[:EXPORT_CHUNK_SIZE])
        if not chunk:
            return
        for (
            pk,
            email,
            first_name,
            last_name,
            company,
            phone,
            stage,
            lead_status,
            contact_type,
            unsubscribed,
            hard_bounced,
            lead_score,
            last_engaged_at,
            source,
            status,
            until,
            reason_type,
            reason_id,
            reason_name,
            created_at,
        ) in chunk:
            pending = status == marketing and until is not None and until > at
            billable = status == marketing and (until is None or until > at)
            yield [
                str(pk),
                _text(email),
                _text(first_name),
                _text(last_name),
                _text(company),
                _text(phone),
                _text(stage),
                _text(lead_status),
                _text(contact_type),
                "true" if unsubscribed else "false",
                "true" if hard_bounced else "false",
                str(lead_score),
                _instant(last_engaged_at),
                _text(source),
                marketing if billable else non_marketing,
                _instant(until) if pending else "",
                _text(reason_type),
                _text(reason_id),
                _text(reason_name),
                _instant(created_at),
            ]
        last = chunk[-1][0]
        if len(chunk) < EXPORT_CHUNK_SIZE:
            return


def contacts_export_csv(
    *,
    contacts: QuerySet[Contact],
    at: dt.datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """The export as CSV text, one piece per chunk (for StreamingHttpResponse or a file).

    `progress(n)` is told after each piece how many contact rows it held.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    rows = 0
    for count, row in enumerate(contacts_export_rows(contacts=contacts, at=at)):
        writer.writerow(row)
        rows += count > 0  # not the header
        if count % EXPORT_CHUNK_SIZE == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if progress and rows:
                progress(rows)
            rows = 0
    if buffer.tell():
        yield buffer.getvalue()
        if progress and rows:
            progress(rows)


def marketing_q(at) -> Q:
    """Effectively marketing at `at` (as `Contact.objects.billable`), as a Q for conditional counts."""
    return Q(marketing_status=MarketingStatus.MARKETING) & (
        Q(marketing_until__isnull=True) | Q(marketing_until__gt=at)
    )


def marketing_recipients(*, contacts: QuerySet[Contact], at) -> QuerySet[Contact]:
    """THE send guard (DESIGN §1.1): who may receive marketing email.

    Marketing at `at`, not unsubscribed, not hard bounced. Every marketing send goes
    through `contacts.services.marketing_email_deliver`, which asks this at each chunk,
    so a contact that changed between the preview and the send is excluded.
    """
    return contacts.filter(marketing_q(at), unsubscribed=False, hard_bounced=False)


@dataclass(frozen=True)
class SendBreakdown:
    """Who of an audience would get a marketing email, and why the others would not.

    `excluded_*` count each excluded contact once, under a fixed precedence:
    non-marketing, then unsubscribed, then bounced (a non-marketing unsubscribed contact
    is "non-marketing"). `*_any` count every contact with that fact, overlaps included.
    `already_sent` (a send under way) are eligible contacts the email already went to
    (or was attempted for); they are not in `will_receive`.
    """

    audience: int
    will_receive: int
    excluded_non_marketing: int
    excluded_unsubscribed: int
    excluded_bounced: int
    unsubscribed_any: int
    bounced_any: int
    already_sent: int = 0

    @property
    def excluded(self) -> int:
        return self.excluded_non_marketing + self.excluded_unsubscribed + self.excluded_bounced

    def as_dict(self) -> dict:
        return {**self.__dict__, "excluded": self.excluded}


def marketing_send_breakdown(
    *, contacts: QuerySet[Contact], at=None, email: MarketingEmail | None = None
) -> SendBreakdown:
    """The breakdown in ONE aggregate query (conditional counts), never contact by contact."""
    at = at or timezone.now()
    marketing = marketing_q(at)
    eligible = marketing & Q(unsubscribed=False, hard_bounced=False)
    # The keys must not be field names ("unsubscribed" would shadow the column).
    counts = {
        "n_audience": Count("pk"),
        "n_marketing": Count("pk", filter=marketing),
        "n_unsubscribed": Count("pk", filter=marketing & Q(unsubscribed=True)),
        "n_bounced": Count("pk", filter=marketing & Q(unsubscribed=False, hard_bounced=True)),
        "n_eligible": Count("pk", filter=eligible),
        "n_unsubscribed_any": Count("pk", filter=Q(unsubscribed=True)),
        "n_bounced_any": Count("pk", filter=Q(hard_bounced=True)),
    }
    # Only an email that has sent (its counts, kept with the sends, or its status say so)
    # pays for the probe; emailsend_once (email, contact) answers each one.
    if (
        email is not None
        and email.pk
        and (email.status != MarketingEmailStatus.DRAFT or email.sent_count or email.failed_count)
    ):
        sent = Exists(EmailSend.objects.filter(email_id=email.pk, contact_id=OuterRef("pk")))
        counts["n_already"] = Count("pk", filter=eligible & Q(sent))
    row = contacts.order_by().aggregate(**counts)
    already = row.get("n_already") or 0
    return SendBreakdown(
        audience=row["n_audience"],
        will_receive=row["n_eligible"] - already,
        excluded_non_marketing=row["n_audience"] - row["n_marketing"],
        excluded_unsubscribed=row["n_unsubscribed"],
        excluded_bounced=row["n_bounced"],
        unsubscribed_any=row["n_unsubscribed_any"],
        bounced_any=row["n_bounced_any"],
        already_sent=already,
    )


def marketing_email_audience(*, email: MarketingEmail) -> QuerySet[Contact]:
    """The email's audience as a queryset: its static list, or its contact filter.

    The filter is checked strictly (a dropped filter would mail everyone): a stored
    filter that no longer validates (say, its source was deleted) raises ValidationError.
    """
    from django.core.exceptions import ValidationError
    from django.db.models.functions import Now

    from contacts.filters import ContactFilter, contact_filter_params

    if email.audience_list_id:
        # contactlist_member_once (contact_list, contact) gives the members.
        return Contact.objects.filter(list_memberships__contact_list_id=email.audience_list_id)
    params = contact_filter_params(email.audience_filter)
    filterset = ContactFilter(data=params, queryset=Contact.objects.all(), now=Now())
    if not filterset.is_valid():
        raise ValidationError({"audience_filter": filterset.errors})
    return filterset.qs


def ad_audience_members(*, audience_id: int) -> QuerySet[Contact]:
    return contact_list().filter(ad_audiences__id=audience_id)


def contact_list_members(*, contact_list_id: int) -> QuerySet[Contact]:
    return contact_list().filter(list_memberships__contact_list_id=contact_list_id)


# --- what switching a channel to marketing would cost (DESIGN §1.4) ---

CHANNEL_RATE_DAYS = 30  # the window whose rate of new contacts is projected


@dataclass(frozen=True)
class ChannelForecast:
    created_recently: int  # contacts the channel created in the last CHANNEL_RATE_DAYS days
    period_end: dt.datetime
    expected_new: int  # at that rate, new contacts from now to the period's end
    cost: dict | None  # billing's preview of making that many marketing now (preview extras)


def channel_marketing_forecast(*, source: Source, at: dt.datetime | None = None) -> ChannelForecast:
    """If a channel (form, chatflow, app) created its contacts as marketing from now on: at the
    rate of the last 30 days, how many would become marketing before the period ends, and
    what that does to this period's invoice (an estimate through the status preview, whose
    extensions price it). Two indexed counts; nothing is written."""
    from contacts.services import SET_MARKETING, contacts_status_preview

    now = at or timezone.now()
    created = Contact.objects.filter(
        source=source, created_at__gte=now - dt.timedelta(days=CHANNEL_RATE_DAYS)
    ).count()  # the source_id index, then created_at
    period_end = usage_current(at=now).period_end
    days_left = max(0.0, (period_end - now).total_seconds() / 86_400)
    expected = math.ceil(created / CHANNEL_RATE_DAYS * days_left)
    preview = contacts_status_preview(
        contacts=Contact.objects.none(), operation=SET_MARKETING, additional=expected, at=now
    )
    return ChannelForecast(
        created_recently=created,
        period_end=period_end,
        expected_new=expected,
        cost=preview.extra.get("cost"),
    )
