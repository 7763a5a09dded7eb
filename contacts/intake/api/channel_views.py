"""Managing the intake channels through the API: forms, chatflows, connected apps, ad accounts.

What their admin pages do, with the same model permissions: every save goes through the
channel's service (which makes its own Source and keeps the source's default in step),
switching marketing on or off included; `…/{id}/marketing-preview/` answers what the
channel would cost as a marketing channel, as the admin's "If switched on" does, and writes
nothing. A connected app's or ad account's token is issued on creation and by
`…/{id}/token/`, shown once in that answer and stored hashed.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status as http
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from contacts.intake.api.channel_serializers import (
    AdAccountCreatedSerializer,
    AdAccountSerializer,
    ChannelCostSerializer,
    ChatflowSerializer,
    ConnectedAppCreatedSerializer,
    ConnectedAppSerializer,
    FormSerializer,
    IssuedTokenSerializer,
)
from contacts.intake.models import AdAccount, Chatflow, ConnectedApp, Form
from contacts.intake.selectors import channel_marketing_forecast
from contacts.intake.services import (
    ad_account_create,
    ad_account_save,
    chatflow_save,
    connected_app_create,
    connected_app_update,
    form_creates_marketing,
    form_save,
    intake_token_issue,
)
from crm.api import requires
from crm.exceptions import Conflict


def _channel_views(noun: str, *, in_use: str = "") -> dict:
    """The schema summaries of a channel's CRUD."""
    one = f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"
    return {
        "list": extend_schema(summary=f"List {noun}s"),
        "retrieve": extend_schema(summary=one[0].upper() + one[1:]),
        "create": extend_schema(summary=f"Create {one}"),
        "update": extend_schema(summary=f"Replace {one}"),
        "partial_update": extend_schema(
            summary=f"Change {one}",
            description="Switching `marketing` (or a form's `create_as_marketing`) on makes the "
            "contacts it creates from then on marketing, billable at once: "
            "`marketing-preview/` says what that would cost.",
        ),
        "destroy": extend_schema(
            summary=f"Delete {one}", description=in_use or "Its contacts and their source stay."
        ),
    }


class ChannelViewSet(viewsets.ModelViewSet):
    """A channel's CRUD (model permissions) and its marketing cost preview."""

    lookup_value_regex = r"[0-9]{1,18}"
    filter_backends: list = []
    # The related rows that keep a channel from being deleted, and the sentence saying so.
    protected_by = ""
    protected_message = ""

    @extend_schema(
        summary="What making this channel's new contacts marketing would cost",
        description="At the rate of the last 30 days, how many contacts the channel would "
        "create before the period ends, and billing's price of making that many marketing "
        "now (the admin's “If switched on”). An estimate; nothing is written.",
        responses=ChannelCostSerializer,
    )
    @action(detail=True, methods=["get"], url_path="marketing-preview", pagination_class=None)
    def marketing_preview(self, request, pk=None):
        channel = self.get_object()
        forecast = channel_marketing_forecast(source=channel.source)
        marketing = (
            form_creates_marketing(channel) if isinstance(channel, Form) else channel.marketing
        )
        return Response(
            ChannelCostSerializer(
                {
                    "marketing": marketing,
                    "created_recently": forecast.created_recently,
                    "expected_new": forecast.expected_new,
                    "period_end": forecast.period_end,
                    "cost": forecast.cost,
                }
            ).data
        )

    def perform_destroy(self, instance):
        if self.protected_by and getattr(instance, self.protected_by).exists():
            raise Conflict(self.protected_message)
        instance.delete()


@extend_schema_view(
    **_channel_views(
        "form", in_use="A form with submissions cannot be deleted (409): set is_active false."
    )
)
class FormViewSet(ChannelViewSet):
    serializer_class = FormSerializer
    protected_by = "submissions"
    protected_message = (
        "This form has submissions, which keep it: it cannot be deleted. "
        "Set is_active to false to take it offline."
    )

    def get_queryset(self):
        return Form.objects.select_related("source").order_by("name")

    def perform_create(self, serializer):
        serializer.instance = form_save(form=Form(**serializer.validated_data))

    def perform_update(self, serializer):
        form = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(form, name, value)
        serializer.instance = form_save(form=form)


@extend_schema_view(**_channel_views("chatflow"))
class ChatflowViewSet(ChannelViewSet):
    serializer_class = ChatflowSerializer

    def get_queryset(self):
        return Chatflow.objects.select_related("source").order_by("name")

    def perform_create(self, serializer):
        serializer.instance = chatflow_save(chatflow=Chatflow(**serializer.validated_data))

    def perform_update(self, serializer):
        chatflow = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(chatflow, name, value)
        serializer.instance = chatflow_save(chatflow=chatflow)


class TokenHolderViewSet(ChannelViewSet):
    """Connected apps and ad accounts: a token shown once, on creation and on rotation."""

    created_serializer_class: type = IssuedTokenSerializer

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        holder, token = self.create_holder(serializer.validated_data)
        holder.token = token
        return Response(self.created_serializer_class(holder).data, status=http.HTTP_201_CREATED)

    def create_holder(self, data: dict):
        raise NotImplementedError

    @extend_schema(
        summary="Issue a new token (the old one stops working)",
        description="The new token is in this answer only: copy it now. Only its hash is "
        "stored, as when the admin regenerates it.",
        request=None,
        responses=IssuedTokenSerializer,
    )
    @action(detail=True, methods=["post"], pagination_class=None)
    def token(self, request, pk=None):
        holder = self.get_object()
        token = intake_token_issue(holder=holder)
        return Response(
            IssuedTokenSerializer(
                {
                    "token": token,
                    "token_hint": holder.token_hint,
                    "token_created_at": holder.token_created_at,
                }
            ).data
        )

    def get_permissions(self):
        if self.action == "token":
            opts = self.get_queryset().model._meta
            view = f"{opts.app_label}.view_{opts.model_name}"
            change = f"{opts.app_label}.change_{opts.model_name}"
            return [requires(view, change)()]
        return super().get_permissions()


@extend_schema_view(
    **{
        **_channel_views("connected app"),
        "create": extend_schema(
            summary="Create a connected app",
            description="The answer holds the app's token, shown this once.",
            responses={201: ConnectedAppCreatedSerializer},
        ),
    }
)
class ConnectedAppViewSet(TokenHolderViewSet):
    serializer_class = ConnectedAppSerializer
    created_serializer_class = ConnectedAppCreatedSerializer

    def get_queryset(self):
        return ConnectedApp.objects.select_related("source").order_by("name")

    def create_holder(self, data: dict):
        app, token = connected_app_create(
            name=data["name"],
            marketing=data.get("marketing", False),
            two_way_sync=data.get("two_way_sync", False),
        )
        if not data.get("is_active", True):
            connected_app_update(
                app=app,
                name=app.name,
                two_way_sync=app.two_way_sync,
                is_active=False,
                marketing=app.marketing,
            )
        return app, token

    def perform_update(self, serializer):
        app, data = serializer.instance, serializer.validated_data
        serializer.instance = connected_app_update(
            app=app,
            name=data.get("name", app.name),
            two_way_sync=data.get("two_way_sync", app.two_way_sync),
            is_active=data.get("is_active", app.is_active),
            marketing=data.get("marketing", app.marketing),
        )


@extend_schema_view(
    **{
        **_channel_views(
            "ad account",
            in_use="An ad account that has sent leads cannot be deleted (409): set is_active false.",
        ),
        "create": extend_schema(
            summary="Create an ad account",
            description="The answer holds the account's webhook token, shown this once.",
            responses={201: AdAccountCreatedSerializer},
        ),
    }
)
class AdAccountViewSet(TokenHolderViewSet):
    serializer_class = AdAccountSerializer
    created_serializer_class = AdAccountCreatedSerializer
    protected_by = "leads"
    protected_message = (
        "This ad account has sent leads, which keep it: it cannot be deleted. "
        "Set is_active to false to stop its webhook."
    )

    def get_queryset(self):
        return AdAccount.objects.select_related("source").order_by("name")

    def create_holder(self, data: dict):
        account, token = ad_account_create(
            name=data["name"], platform=data["platform"], marketing=data.get("marketing", True)
        )
        if not data.get("is_active", True):
            account.is_active = False
            ad_account_save(ad_account=account)
        return account, token

    def perform_update(self, serializer):
        account = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(account, name, value)
        serializer.instance = ad_account_save(ad_account=account)
