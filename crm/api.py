"""Shared bases for the REST API."""

from rest_framework import permissions
from rest_framework.pagination import CursorPagination


class StrictModelPermissions(permissions.DjangoModelPermissions):
    """Model permissions where reading needs the view permission too."""

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": [],
    }


class CreatedCursorPagination(CursorPagination):
    """Cursor pagination on the primary key: stable under inserts and no COUNT(*)."""

    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


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
