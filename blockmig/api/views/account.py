"""Who am I, and your API tokens: list, create with a user name and password (what
`blockmig login` does), revoke. The token rules live in blockmig.api.tokens."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import authenticate
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from blockmig.api import serializers as s
from blockmig.api.auth import signed_in_user, via_of
from blockmig.api.errors import ApiError
from blockmig.api.models import ApiToken
from blockmig.api.throttling import TokenCreateThrottle
from blockmig.api.tokens import token_create, token_revoke
from blockmig.api.views.base import ERRORS, ApiView
from blockmig.errors import Refused
from hosts.roles import user_roles


class MeView(ApiView):
    @extend_schema(responses={200: s.MeSerializer, **ERRORS}, summary="The calling user, roles and how they signed in")
    def get(self, request: Request) -> Response:
        return Response({"username": request.user.get_username(), "roles": user_roles(request.user), "via": via_of(request)})


class TokenListCreateView(ApiView):
    """List your tokens; create one with a user name and password (what `blockmig login` does)."""

    def get_permissions(self):
        return [permissions.AllowAny()] if self.request.method == "POST" else super().get_permissions()

    def get_throttles(self):
        return [TokenCreateThrottle()] if self.request.method == "POST" else super().get_throttles()

    @extend_schema(responses={200: s.TokenSerializer(many=True), **ERRORS}, summary="Your API tokens")
    def get(self, request: Request) -> Response:
        tokens = ApiToken.objects.filter(user=signed_in_user(request))
        return Response(s.TokenSerializer(tokens, many=True).data)

    @extend_schema(
        request=s.TokenCreateSerializer,
        responses={201: s.TokenCreatedSerializer, **ERRORS, 429: s.ErrorSerializer},
        summary="Create a token with your user name and password (the token is shown once)",
        auth=[],
    )
    def post(self, request: Request) -> Response:
        form = s.TokenCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        user = authenticate(request._request, username=data["username"], password=data["password"])
        if user is None:
            raise ApiError("authentication_failed", "That user name and password do not match an active account.")
        days = data.get("expires_in_days")
        try:
            token, plain = token_create(
                user=user, name=data["name"], expires_at=timezone.now() + timedelta(days=days) if days else None
            )
        except Refused as refused:
            raise ApiError("invalid", refused.message, {refused.field or "non_field": [refused.message]}) from None
        return Response({**s.TokenSerializer(token).data, "token": plain}, status=status.HTTP_201_CREATED)


class TokenRevokeView(ApiView):
    @extend_schema(responses={200: s.TokenSerializer, **ERRORS}, summary="Revoke one of your tokens (at once)")
    def delete(self, request: Request, prefix: str) -> Response:
        token = ApiToken.objects.filter(user=signed_in_user(request), prefix=prefix).first()
        if token is None:
            raise NotFound(f"You have no token with the prefix {prefix}.")
        return Response(s.TokenSerializer(token_revoke(token=token, user=request.user)).data)
