"""`GET /api/me/`: who the credentials belong to, with their roles and permissions, so an
automation can check what it may do before it tries."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView


class MeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.CharField(allow_blank=True)
    first_name = serializers.CharField(allow_blank=True)
    last_name = serializers.CharField(allow_blank=True)
    is_staff = serializers.BooleanField(help_text="May sign in to the admin.")
    is_superuser = serializers.BooleanField(help_text="Has every permission.")
    groups = serializers.ListField(
        child=serializers.CharField(),
        help_text="The roles (Marketing ops, Sales, Billing admin, Auditor), by name.",
    )
    permissions = serializers.ListField(
        child=serializers.CharField(),
        help_text="Every permission held, directly or through a role, as app_label.codename, "
        "sorted (a superuser's: all of them).",
    )


class MeView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="Who these credentials are",
        description="The user the token (or session) belongs to, its roles and permissions.",
        responses=MeSerializer,
    )
    def get(self, request):
        user = request.user
        body = {
            "id": user.pk,
            "username": user.get_username(),
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "is_staff": user.is_staff,
            "is_superuser": user.is_superuser,
            "groups": sorted(user.groups.values_list("name", flat=True)),
            "permissions": sorted(user.get_all_permissions()),
        }
        return Response(MeSerializer(body).data)
