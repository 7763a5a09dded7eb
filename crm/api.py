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
