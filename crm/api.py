"""Shared bases for the REST API."""

from collections.abc import Mapping

from django import forms
from django.http import QueryDict
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import permissions, serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination

from crm.planner import read_searched
from crm.replica import replica_reads


class StrictModelPermissions(permissions.DjangoModelPermissions):
    """Model permissions where reading needs the view permission too."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": [],
    }


class CreatedCursorPagination(CursorPagination):
    """Cursor pagination on the primary key: stable under inserts and no COUNT(*).

    Strict: a page size that is not a whole number from 1, or a cursor this paginator did
    not make, is a 400 (DRF would quietly use the default size, or answer 404 on a list).
    A page size above max_page_size is capped, as the schema says.
    """

    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def paginate_queryset(self, queryset, request, view=None):
        def read():
            return super(CreatedCursorPagination, self).paginate_queryset(queryset, request, view)

        # A list page may lag the primary by the replica's delay (crm.replica).
        with replica_reads():
            if getattr(view, "searched", lambda request: False)(request):
                return read_searched(queryset.db, read)
            return read()

    def get_page_size(self, request):
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
            raise ValidationError({self.page_size_query_param: ["A whole number from 1."]})
        return min(int(raw), self.max_page_size)

    def decode_cursor(self, request):
        try:
            cursor = super().decode_cursor(request)
            # The position is an id (the ordering): anything else was not made here.
            valid = cursor is None or cursor.position is None or _is_id(cursor.position)
        except NotFound:
            valid = False
        if not valid:
            raise ValidationError(
                {self.cursor_query_param: ["Not a cursor: use the next or previous link as given."]}
            )
        return cursor

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] = (
                    f"Results per page (default {self.page_size}; more than "
                    f"{self.max_page_size} gives {self.max_page_size})."
                )
        return parameters


def _is_list(view) -> bool:
    """A list (a viewset's `list` or a collection action, a ListAPIView), not one object."""
    action = getattr(view, "action", None)
    if action is not None:
        return action == "list" or not getattr(getattr(view, action, None), "detail", True)
    lookup = getattr(view, "lookup_url_kwarg", None) or getattr(view, "lookup_field", "pk")
    return lookup not in getattr(view, "kwargs", {})


def _is_id(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 18


# Query parameters every list reads besides its filters (DRF's `?format=` included, though
# this API chooses the representation by the Accept header).
COMMON_LIST_PARAMS = frozenset({"format"})


class StrictFilterBackend(DjangoFilterBackend):
    """django-filter's backend, strict about what a list is asked.

    - An empty value is an error unless the filter takes text: django-filter reads
      `?lifecycle_stage=` or `?created_after=` as "no filter", so a typo'd client would get
      every row, and the schema (an enum, a date-time) does not allow "".
    - On a list, a parameter that is neither one of its filters nor a pagination, ordering,
      search or format parameter is a 400 listing the valid ones: `?lifecycle=lead` (for
      `lifecycle_stage`) would otherwise answer the whole unfiltered list, which looks like
      an answer. A view that reads parameters of its own names them in `extra_query_params`.
    """

    def filter_queryset(self, request, queryset, view):
        if _is_list(view):
            valid = self.valid_params(request, queryset, view)
            unknown = sorted(set(request.query_params) - valid)
            if unknown:
                listed = ", ".join(sorted(valid))
                raise ValidationError(
                    {
                        name: [f"Not a parameter of this list. Valid parameters: {listed}."]
                        for name in unknown
                    }
                )
        return super().filter_queryset(request, queryset, view)

    def valid_params(self, request, queryset, view) -> set[str]:
        """The parameters this list understands: its filters, its paginator's, its other
        filter backends' (search, ordering), `format` and the view's own."""
        valid = set(COMMON_LIST_PARAMS) | set(getattr(view, "extra_query_params", ()))
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is not None:
            for name, filter_ in filterset_class.base_filters.items():
                suffixes = getattr(filter_.field_class.widget, "suffixes", None)
                if suffixes:  # a range filter reads name_min / name_max, name_after / …
                    valid.update(f"{name}_{suffix}" if suffix else name for suffix in suffixes)
                else:
                    valid.add(name)
        paginator = getattr(view, "paginator", None)
        for attr in (
            "cursor_query_param",
            "page_query_param",
            "page_size_query_param",
            "limit_query_param",
            "offset_query_param",
        ):
            if getattr(paginator, attr, None):
                valid.add(getattr(paginator, attr))
        for backend in getattr(view, "filter_backends", ()):
            for attr in ("search_param", "ordering_param"):
                if getattr(backend, attr, None):
                    valid.add(getattr(backend, attr))
        return valid

    def get_filterset(self, request, queryset, view):
        filterset = super().get_filterset(request, queryset, view)
        if filterset is not None:
            empty = {
                name: ["Give a value, or leave the parameter out."]
                for name, field in filterset.form.fields.items()
                if request.query_params.get(name) == "" and not isinstance(field, forms.CharField)
            }
            if empty:
                raise ValidationError(empty)
        return filterset


class HasPermissions(permissions.BasePermission):
    """Named permissions, whatever the method: all of `required`, or one of them with `any_of`.

    For endpoints that are not plain CRUD on one model (status changes, reports), where
    the model-permission mapping (POST → add_*) would ask for the wrong permission.
    An anonymous request fails here and DRF answers 401 (token auth comes first).
    """

    required: tuple[str, ...] = ()
    any_of: bool = False

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if self.any_of:
            return any(user.has_perm(perm) for perm in self.required)
        return user.has_perms(self.required)


def requires(*perms: str, any_of: bool = False, message: str = "") -> type[HasPermissions]:
    """A permission class needing `perms` (all of them, or one with `any_of=True`)."""
    joiner = " or " if any_of else " and "
    return type(
        "Requires_" + "_".join(p.replace(".", "_") for p in perms),
        (HasPermissions,),
        {
            "required": tuple(perms),
            "any_of": any_of,
            "message": message or f"This needs the permission {joiner.join(perms)}.",
        },
    )


def _json_type_error(field: serializers.Field, value) -> str | None:
    """Why `value`, as parsed from JSON, is not of the type the schema gives `field` (or,
    for a choice, not one of its values)."""
    if value is None:
        return None if field.allow_null else "This field may not be null."
    if isinstance(field, serializers.BooleanField):
        ok = isinstance(value, bool)
        expected = "true or false"
    elif isinstance(field, serializers.IntegerField | serializers.PrimaryKeyRelatedField):
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "a whole number"
    elif isinstance(field, serializers.FloatField):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        expected = "a number"
    elif isinstance(field, serializers.ChoiceField) and isinstance(value, str):
        known = value in field.choices or (value == "" and field.allow_blank)
        return None if known else field.error_messages["invalid_choice"].format(input=value)
    elif isinstance(
        field,
        serializers.CharField
        | serializers.ChoiceField
        | serializers.DateTimeField
        | serializers.DateField
        | serializers.SlugRelatedField,
    ):
        ok = isinstance(value, str)
        expected = "a string"
        longest = getattr(field, "max_length", None)
        if ok and longest is not None and len(value) > longest:
            # The schema's maxLength is the string as sent: DRF trims the whitespace first,
            # and would take a longer string padded with it.
            return field.error_messages["max_length"].format(max_length=longest)
    elif isinstance(field, serializers.ListField):
        if not isinstance(value, list):
            return "Expected a list."
        for item in value:
            error = _json_type_error(field.child, item)
            if error:
                return f"Each item: {error[0].lower()}{error[1:]}"
        return None
    elif isinstance(field, serializers.DictField | serializers.Serializer):
        ok = isinstance(value, dict)
        expected = "an object"
    else:
        return None
    return None if ok else f"Expected {expected}, not {type(value).__name__}."


class StrictTypesMixin:
    """JSON values must already have their field's type (the schema's): DRF alone would
    take 0 for "0", "yes" or 1 for true and "5" for 5 — requests the schema forbids. A
    choice must be one of the values.

    Form and multipart bodies and query strings carry only text: they are left to the
    fields' own parsing.
    """

    def to_internal_value(self, data):
        errors = json_type_errors(self, data)
        if errors:
            raise ValidationError(errors)
        return super().to_internal_value(data)


def json_type_errors(serializer: serializers.Serializer, data) -> dict[str, list[str]]:
    """The fields of `serializer` whose value in the JSON object `data` has the wrong type."""
    if not isinstance(data, Mapping) or isinstance(data, QueryDict):
        return {}
    errors = {}
    for field in serializer._writable_fields:
        if field.field_name in data:
            error = _json_type_error(field, data[field.field_name])
            if error:
                errors[field.field_name] = [error]
    return errors


class StrictSerializer(StrictTypesMixin, serializers.Serializer):
    """A serializer of request bodies (see StrictTypesMixin)."""


class StrictModelSerializer(StrictTypesMixin, serializers.ModelSerializer):
    """A model serializer of request bodies (see StrictTypesMixin)."""
