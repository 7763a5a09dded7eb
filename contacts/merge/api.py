"""POST /api/contacts/merge/: merge two contacts (contacts.merge.services.contacts_merge).

An interface only: it checks the body, calls the service as the API user and answers with
the survivor, as the contacts API renders a contact.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts.api.serializers import IDEMPOTENCY_KEY_MAX, MAX_ID, ContactSerializer
from contacts.api.views import IDEMPOTENCY_PARAMETER, REPLAYED_HEADER, _client_key
from contacts.merge.selectors import MERGE_FIELDS
from contacts.merge.services import MergeConflict, MergeError, MergeNotFound, contacts_merge
from contacts.selectors import contact_list
from contacts.status.results import LockedSourceError, MarketingNotPermitted
from crm.api import StrictSerializer, requires
from crm.exceptions import Conflict

MERGE_PERMISSIONS = ("contacts.view_contact", "contacts.change_contact", "contacts.delete_contact")


class ContactMergeSerializer(StrictSerializer):
    primary = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, help_text="The contact that stays (the survivor)."
    )
    secondary = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, help_text="The contact merged into it and deleted."
    )
    values = serializers.DictField(
        required=False,
        help_text="Fields the survivor takes, by name (source: a source id): "
        f"{', '.join(MERGE_FIELDS)}. Others keep the primary's value, or the secondary's "
        "where the primary's is empty.",
    )
    idempotency_key = serializers.CharField(required=False, max_length=IDEMPOTENCY_KEY_MAX)


class ContactMergeView(APIView):
    permission_classes = [
        requires(
            *MERGE_PERMISSIONS,
            message=f"Merging contacts needs the permissions {' and '.join(MERGE_PERMISSIONS)}.",
        )
    ]

    @extend_schema(
        summary="Merge two contacts",
        operation_id="contacts_merge",
        description="The secondary contact is merged into the primary and deleted; its "
        "engagement, list and audience memberships, workflow enrollments and status history "
        "move to the primary. The survivor is marketing if either was (a pending change to "
        "non-marketing survives unless either was plainly marketing). Making the survivor "
        "marketing needs contacts.change_marketing_status. A retry (same pair, or same "
        "idempotency key) answers the same survivor.",
        request=ContactMergeSerializer,
        responses={
            200: ContactSerializer,
            400: OpenApiResponse(description="Bad values, or the locked-source rule."),
            404: OpenApiResponse(description="An unknown contact id."),
            409: OpenApiResponse(description="The same contact twice, or already merged."),
        },
        parameters=[IDEMPOTENCY_PARAMETER],
    )
    def post(self, request):
        serializer = ContactMergeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        client_key = _client_key(request, data.get("idempotency_key"))
        try:
            result = contacts_merge(
                survivor=data["primary"],
                merged_away=data["secondary"],
                values=data.get("values"),
                by=request.user,
                idempotency_key=f"api:{request.user.pk}:{client_key}" if client_key else None,
            )
        except MergeNotFound as error:
            raise NotFound(str(error)) from error
        except MergeConflict as error:
            raise Conflict(str(error)) from error
        except MarketingNotPermitted as error:
            raise PermissionDenied(str(error)) from error
        except LockedSourceError as error:
            raise ValidationError({"values": [str(error)]}) from error
        except MergeError as error:
            raise ValidationError(
                {"values": error.errors} if error.errors else {"values": [str(error)]}
            ) from error
        survivor = contact_list().get(pk=result.survivor.pk)
        headers = {REPLAYED_HEADER: "true"} if result.replayed else {}
        return Response(ContactSerializer(survivor).data, headers=headers)
