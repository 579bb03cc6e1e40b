"""Who is calling: a personal token (`Authorization: Bearer bm_…`) or the console's own
session (with its CSRF check, DRF's SessionAuthentication)."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from blockmig.api.models import ApiToken
from blockmig.api.tokens import TokenRefused, token_authenticate

SCHEMES = ("bearer", "token")


def signed_in_user(request: HttpRequest | Request) -> User:
    """The caller of a view that only signed-in users reach (the API's permission check, the
    console's login requirement): typed as a user, so the ORM takes it as one."""
    if not isinstance(request.user, User):
        raise PermissionDenied("Sign in first.")
    return request.user


class TokenAuthenticationFailed(exceptions.AuthenticationFailed):
    """401 with the token's own code (token_invalid, token_expired, token_revoked)."""

    def __init__(self, refused: TokenRefused):
        super().__init__(refused.message, refused.code)


class ApiTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request):
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0].lower() not in SCHEMES:
            return None
        if len(header) != 2:
            raise TokenRefusedHeader()
        try:
            token = token_authenticate(header[1])
        except TokenRefused as refused:
            raise TokenAuthenticationFailed(refused) from None
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="blockmig"'


class TokenRefusedHeader(exceptions.AuthenticationFailed):
    def __init__(self):
        super().__init__("Send the token as “Authorization: Bearer bm_…” (one value, no spaces).", "token_invalid")


def via_of(request: Request) -> str:
    """What the audit trail says about how this request reached blockmig."""
    if isinstance(request.auth, ApiToken):
        return f"api token “{request.auth.name}”"
    return "api (console session)"


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """How the schema describes the token (drf-spectacular finds it by its target class)."""

    target_class = "blockmig.api.auth.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema) -> dict:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "bm_<prefix>_<secret>"}
