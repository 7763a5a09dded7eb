"""Authentication and throttling of the intake endpoints (DESIGN §3: public intake is throttled).

* Public endpoints (forms, external forms, chatflows) authenticate nobody and are
  throttled per client address under the scope "intake".
* A connected app or an ad account authenticates with its own token,
  `Authorization: Bearer <token>`, only on its own endpoint: these classes are set on
  those views alone, so a staff user's token does not work there and an app's token
  works nowhere else (the default `TokenAuthentication` knows nothing of it). They are
  throttled per holder under the scope "intake_apps".

Rates live in settings (`REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`); how they are counted,
and which address is the client's, is `crm/throttling.py`.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from rest_framework import authentication, exceptions, permissions

from contacts.intake.models import (
    AdAccount,
    ConnectedApp,
)
from contacts.intake.services import intake_token_holder
from crm.throttling import ScopedCounterThrottle

PUBLIC_SCOPE = "intake"
APPS_SCOPE = "intake_apps"


class IntakeThrottle(ScopedCounterThrottle):
    """Counts a token holder by itself and anyone else by their client address."""

    def get_cache_key(self, request, view):
        holder = getattr(request, "auth", None)
        if isinstance(holder, ConnectedApp | AdAccount):
            ident = f"{holder._meta.model_name}:{holder.pk}"
        else:
            ident = self.get_ident(request)
        return self.cache_format % {"scope": self.scope, "ident": ident}


class _HolderTokenAuthentication(authentication.BaseAuthentication):
    model: type[ConnectedApp] | type[AdAccount]
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Give the header as: Authorization: Bearer <token>."
            )
        try:
            token = header[1].decode()
        except UnicodeError as error:
            raise exceptions.AuthenticationFailed("The token is not valid.") from error
        holder = intake_token_holder(model=self.model, token=token)
        if holder is None:
            raise exceptions.AuthenticationFailed("The token is not valid (or was regenerated).")
        return AnonymousUser(), holder

    def authenticate_header(self, request):
        return self.keyword


class ConnectedAppTokenAuthentication(_HolderTokenAuthentication):
    model = ConnectedApp


class AdAccountTokenAuthentication(_HolderTokenAuthentication):
    model = AdAccount


class IsTokenHolderOfThisUrl(permissions.BasePermission):
    """The authenticated holder is the one the URL names (an app cannot write as another)."""

    message = "This token belongs to another connected app or ad account."

    def has_permission(self, request, view) -> bool:
        holder = getattr(request, "auth", None)
        if not isinstance(holder, view.holder_model):
            return False
        return str(holder.pk) == str(view.kwargs.get("pk"))


class ConnectedAppTokenScheme(OpenApiAuthenticationExtension):
    target_class = "contacts.intake.api.auth.ConnectedAppTokenAuthentication"
    name = "connectedAppToken"

    def get_security_definition(self, auto_schema):
        scheme = build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix="Bearer"
        )
        scheme["description"] = "A connected app's own token (Admin › Connected apps)."
        return scheme


class AdAccountTokenScheme(OpenApiAuthenticationExtension):
    target_class = "contacts.intake.api.auth.AdAccountTokenAuthentication"
    name = "adAccountToken"

    def get_security_definition(self, auto_schema):
        scheme = build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix="Bearer"
        )
        scheme["description"] = "An ad account's webhook token (Admin › Ad accounts)."
        return scheme
