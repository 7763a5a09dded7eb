"""The contacts list's filters, named as the API's (`contacts.filters.ContactFilter`).

A filter a person sets in the admin and one a client sends to `GET /api/contacts/` have the
same parameter and the same values: `?marketing_status=marketing&pending=false` means the
same in `/admin/contacts/contact/` and `/api/contacts/`. The admin's older names (`?marketing=`,
Django's `lifecycle_stage__exact=`, …) still work: the list redirects them to the new ones
(`FILTER_ALIASES`), so bookmarks and links saved before the rename keep their meaning.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpResponseRedirect, QueryDict
from django.utils import timezone

from contacts.models import ContactType, LeadStatus, LifecycleStage, SourceKind

TRUE, FALSE = "true", "false"


class MarketingStatusFilter(admin.SimpleListFilter):
    """The *effective* status now: a contact whose pending date has passed is non-marketing
    even before the rollover has caught its stored status up (the API's `marketing_status`)."""

    title = "marketing status"
    parameter_name = "marketing_status"

    def lookups(self, request, model_admin):
        return [("marketing", "Marketing"), ("non_marketing", "Non-marketing")]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "marketing":
            return queryset.billable(timezone.now())
        if value == "non_marketing":
            return queryset.not_billable(timezone.now())
        return queryset


class PendingFilter(admin.SimpleListFilter):
    """Marketing contacts scheduled non-marketing at the next update date (the API's
    `pending`). With "Marketing", "No" is what a hygiene pass or the savings report can
    still demote: marketing with no pending change."""

    title = "pending non-marketing"
    parameter_name = "pending"

    def lookups(self, request, model_admin):
        return [
            (TRUE, "Yes: non-marketing from the next update date"),
            (FALSE, "No pending change"),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == TRUE:
            return queryset.pending_downgrade(now)  # contact_pending_idx
        if self.value() == FALSE:
            return queryset.not_pending(now)
        return queryset


def choice_filter(
    *, field: str, parameter: str, title: str, choices
) -> type[admin.SimpleListFilter]:
    """A filter on a choice column under the API's parameter name (Django's own would be
    `<field>__exact`)."""

    class ChoiceFilter(admin.SimpleListFilter):
        def lookups(self, request, model_admin):
            return list(choices)

        def queryset(self, request, queryset):
            value = self.value()
            if value in dict(choices):
                return queryset.filter(**{field: value})
            return queryset

    ChoiceFilter.title = title
    ChoiceFilter.parameter_name = parameter
    ChoiceFilter.__name__ = f"{parameter.title().replace('_', '')}Filter"
    return ChoiceFilter


SourceKindFilter = choice_filter(
    field="source__kind", parameter="source_kind", title="source kind", choices=SourceKind.choices
)
LifecycleStageFilter = choice_filter(
    field="lifecycle_stage",
    parameter="lifecycle_stage",
    title="lifecycle stage",
    choices=LifecycleStage.choices,
)
LeadStatusFilter = choice_filter(
    field="lead_status", parameter="lead_status", title="lead status", choices=LeadStatus.choices
)
ContactTypeFilter = choice_filter(
    field="contact_type",
    parameter="contact_type",
    title="contact type",
    choices=ContactType.choices,
)

# Old parameter → {value: the new parameters}; `None` stands for "any value, same value".
FILTER_ALIASES: dict[str, dict[str | None, dict[str, str]]] = {
    "marketing": {
        "marketing": {"marketing_status": "marketing"},
        "non_marketing": {"marketing_status": "non_marketing"},
        "pending": {"pending": TRUE},
        "settled": {"marketing_status": "marketing", "pending": FALSE},
    },
    "source__kind__exact": {None: {"source_kind": ""}},
    "lifecycle_stage__exact": {None: {"lifecycle_stage": ""}},
    "lead_status__exact": {None: {"lead_status": ""}},
    "contact_type__exact": {None: {"contact_type": ""}},
}


def filter_alias_query(params: QueryDict) -> QueryDict | None:
    """`params` under the current names, or None when it uses no old one (a value the old
    filter did not know is kept as it is, for the new filter to judge)."""
    if not any(name in params for name in FILTER_ALIASES):
        return None
    query = QueryDict(mutable=True)
    for name, values in params.lists():
        aliases = FILTER_ALIASES.get(name)
        if aliases is None:
            query.setlist(name, values)
            continue
        for value in values:
            new = aliases.get(value) or aliases.get(None)
            if new is None:  # a value the old filter never had: keep it under the new name
                new = dict.fromkeys(next(iter(aliases.values())), value)
            for new_name, new_value in new.items():
                query[new_name] = new_value or value
    return query


class FilterAliasesMixin:
    """The list's old filter names, read as the API's (see FILTER_ALIASES): a page asked
    for with them is redirected to its current address; a form posted from a page opened
    before the rename (an action over the selection) is read with the current names, so
    the action is not lost to a redirect."""

    def changelist_view(self, request, extra_context=None):
        query = filter_alias_query(request.GET)
        if query is not None:
            if request.method == "GET":
                return HttpResponseRedirect(f"{request.path}?{query.urlencode()}")
            query._mutable = False
            request.GET = query
        return super().changelist_view(request, extra_context)
