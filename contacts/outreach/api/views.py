"""The outreach API: marketing email, ad audiences, lists, communications."""

from __future__ import annotations

from django.db.models.functions import Now
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import mixins, viewsets
from rest_framework import status as http
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from contacts.api.views import IDEMPOTENCY_PARAMETER, REPLAYED_HEADER, _client_key
from contacts.filters import ContactFilter
from contacts.outreach.api.serializers import (
    AdAudienceSerializer,
    CommunicationSerializer,
    ContactListSerializer,
    MarketingEmailSendResultSerializer,
    MarketingEmailSerializer,
    MembershipChangeSerializer,
    MembershipRequestSerializer,
    SendBreakdownSerializer,
)
from contacts.outreach.models import (
    AdAudience,
    Communication,
    ContactList,
    MarketingEmail,
)
from contacts.outreach.selectors import (
    marketing_email_audience,
    marketing_send_breakdown,
)
from contacts.outreach.services import (
    AlreadySent,
    SendRefused,
    ad_audience_add,
    ad_audience_remove,
    communication_send,
    contact_list_add,
    contact_list_remove,
    marketing_email_create,
    marketing_email_delete,
    marketing_email_send,
    marketing_email_update,
)
from contacts.selectors import (
    contact_list,
)
from crm.api import requires
from crm.exceptions import Conflict


def _membership_target(data: dict):
    if "ids" in data:
        return data["ids"]
    return ContactFilter(data=data["filter"], queryset=contact_list(), now=Now()).qs


def _send_refused(error: SendRefused):
    return Conflict(str(error))


@extend_schema_view(
    list=extend_schema(summary="List marketing emails"),
    retrieve=extend_schema(summary="A marketing email"),
    create=extend_schema(
        summary="Create a marketing email (a draft)",
        description="The body must contain {unsubscribe_url}. The audience is a contact "
        "filter (audience_filter) or a static list (audience_list), not both.",
    ),
    update=extend_schema(summary="Replace a draft marketing email (409 once sending)"),
    partial_update=extend_schema(summary="Change a draft marketing email (409 once sending)"),
    destroy=extend_schema(summary="Delete a draft marketing email (409 once sending)"),
)
class MarketingEmailViewSet(viewsets.ModelViewSet):
    serializer_class = MarketingEmailSerializer
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self):
        return MarketingEmail.objects.all()

    def perform_create(self, serializer):
        serializer.instance = marketing_email_create(**serializer.validated_data)

    def perform_update(self, serializer):
        try:
            serializer.instance = marketing_email_update(
                email=serializer.instance, **serializer.validated_data
            )
        except SendRefused as error:
            raise _send_refused(error) from error

    def perform_destroy(self, instance):
        try:
            marketing_email_delete(email=instance)
        except SendRefused as error:
            raise _send_refused(error) from error

    @extend_schema(
        summary="Who would receive it, and why the others would not",
        description="Audience size, will receive, excluded by reason (each excluded contact "
        "once: non-marketing, then unsubscribed, then bounced) and per reason with overlaps "
        "(unsubscribed_any, bounced_any). One aggregate query; nothing is written.",
        responses=SendBreakdownSerializer,
    )
    @action(detail=True, methods=["get"], pagination_class=None)
    def preview(self, request, pk=None):
        email = self.get_object()
        breakdown = marketing_send_breakdown(
            contacts=marketing_email_audience(email=email), email=email
        )
        return Response(SendBreakdownSerializer(breakdown.as_dict()).data)

    @extend_schema(
        summary="Send it (in the background)",
        description="Idempotent: a draft starts sending; a sending email resumes (only the "
        "rest is sent); a sent email answers 409 and sends nothing. Only marketing, "
        "subscribed, unbounced contacts receive it, checked again at send time.",
        request=None,
        responses={
            202: MarketingEmailSendResultSerializer,
            409: OpenApiResponse(description="Already sent; nothing more was sent."),
        },
    )
    @action(
        detail=True,
        methods=["post"],
        permission_classes=[
            requires(
                "contacts.send_marketingemail",
                "contacts.view_marketingemail",
                message="Sending marketing email needs the permission "
                "contacts.send_marketingemail.",
            )
        ],
    )
    def send(self, request, pk=None):
        email = self.get_object()
        try:
            outcome = marketing_email_send(email=email, actor=request.user)
        except AlreadySent as error:
            raise _send_refused(error) from error
        email.refresh_from_db()
        data = {
            "status": email.status,
            "breakdown": SendBreakdownSerializer(outcome.breakdown.as_dict()).data,
            "email": MarketingEmailSerializer(email).data,
        }
        return Response(data, status=http.HTTP_202_ACCEPTED)


class _MembersMixin:
    """POST {id}/members/ (add) and {id}/members/remove/, by ids or filter, with preview."""

    add_service = None
    remove_service = None
    owner_argument = ""

    def _members(self, request, service):
        owner = self.get_object()
        serializer = MembershipRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        change = service(
            **{self.owner_argument: owner},
            contacts=_membership_target(data),
            preview=data["preview"],
        )
        return Response(MembershipChangeSerializer(change.as_dict()).data)


def _members_actions(change_permission: str, noun: str, refuse_note: str):
    """The add/remove actions of a membership viewset, with their permission and schema."""
    permission = requires(change_permission, "contacts.view_contact")

    @extend_schema(
        summary=f"Add contacts to the {noun}",
        description=f"By ids or by filter; preview=true only counts. {refuse_note}",
        request=MembershipRequestSerializer,
        responses=MembershipChangeSerializer,
    )
    @action(detail=True, methods=["post"], permission_classes=[permission], url_path="members")
    def members(self, request, pk=None):
        return self._members(request, type(self).add_service)

    @extend_schema(
        summary=f"Remove contacts from the {noun}",
        request=MembershipRequestSerializer,
        responses=MembershipChangeSerializer,
    )
    @action(
        detail=True,
        methods=["post"],
        permission_classes=[permission],
        url_path="members/remove",
    )
    def remove_members(self, request, pk=None):
        return self._members(request, type(self).remove_service)

    return members, remove_members


@extend_schema_view(
    list=extend_schema(summary="List ad audiences"),
    retrieve=extend_schema(summary="An ad audience"),
    create=extend_schema(summary="Create an ad audience"),
    update=extend_schema(summary="Replace an ad audience"),
    partial_update=extend_schema(summary="Change an ad audience"),
    destroy=extend_schema(summary="Delete an ad audience (and its memberships)"),
)
class AdAudienceViewSet(_MembersMixin, viewsets.ModelViewSet):
    serializer_class = AdAudienceSerializer
    lookup_value_regex = r"[0-9]{1,18}"
    owner_argument = "audience"
    add_service = staticmethod(ad_audience_add)
    remove_service = staticmethod(ad_audience_remove)
    members, remove_members = _members_actions(
        "contacts.change_adaudience",
        "ad audience",
        "Only marketing contacts are added: the others are refused and counted "
        "(refused_non_marketing). Unsubscribed or bounced marketing contacts are accepted.",
    )

    def get_queryset(self):
        return AdAudience.objects.all()


@extend_schema_view(
    list=extend_schema(summary="List static contact lists"),
    retrieve=extend_schema(summary="A contact list"),
    create=extend_schema(summary="Create a contact list"),
    update=extend_schema(summary="Replace a contact list"),
    partial_update=extend_schema(summary="Change a contact list"),
    destroy=extend_schema(summary="Delete a contact list (refused while an email uses it)"),
)
class ContactListViewSet(_MembersMixin, viewsets.ModelViewSet):
    serializer_class = ContactListSerializer
    lookup_value_regex = r"[0-9]{1,18}"
    owner_argument = "contact_list"
    add_service = staticmethod(contact_list_add)
    remove_service = staticmethod(contact_list_remove)
    members, remove_members = _members_actions(
        "contacts.change_contactlist",
        "list",
        "Any contact may be on a list; the send guard decides who gets marketing email.",
    )

    def get_queryset(self):
        return ContactList.objects.all()


@extend_schema_view(
    list=extend_schema(summary="List non-marketing communications, newest first"),
    retrieve=extend_schema(summary="A communication"),
    create=extend_schema(
        summary="Send a non-marketing communication",
        description="Sales one-to-one, transactional, registration, chat transcript, ticket "
        "reply or feedback survey: reaches any contact (marketing or not, unsubscribed or "
        "not) and is logged with its type. 'marketing' is refused. A retry with the same "
        "idempotency_key (or Idempotency-Key header) returns the first log and sends nothing.",
        parameters=[IDEMPOTENCY_PARAMETER],
    ),
)
class CommunicationViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = CommunicationSerializer
    filterset_fields = ["contact", "type"]
    lookup_value_regex = r"[0-9]{1,18}"

    def get_queryset(self):
        return Communication.objects.all()

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        client_key = _client_key(request, data.get("idempotency_key"))
        try:
            log = communication_send(
                contact=data["contact"],
                type=data["type"],
                subject=data["subject"],
                body=data["body"],
                actor=request.user,
                idempotency_key=f"api:{request.user.pk}:{client_key}" if client_key else None,
            )
        except SendRefused as error:
            raise ValidationError({"type": [str(error)]}) from error
        headers = {REPLAYED_HEADER: "true"} if log.replayed else {}
        code = http.HTTP_201_CREATED if not log.replayed else http.HTTP_200_OK
        return Response(self.get_serializer(log).data, status=code, headers=headers)
