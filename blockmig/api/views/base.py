"""What every API view shares: the role check and its 403 message, the audit marker for
the request (blockmig.audit.AUDIT_VIA names the token or the console session), pagination,
the error responses the schema names."""

from __future__ import annotations

from contextvars import Token

from django.contrib.auth.decorators import login_not_required
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import permissions
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.views import APIView

from blockmig.api import serializers as s
from blockmig.api.auth import via_of
from blockmig.audit import AUDIT_VIA
from hosts.roles import needs_role

ERRORS = {400: s.ErrorSerializer, 401: s.ErrorSerializer, 403: s.ErrorSerializer, 404: s.ErrorSerializer}
ACTION_ERRORS = {**ERRORS, 409: s.ErrorSerializer, 422: s.ErrorSerializer}
IDEMPOTENCY = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER, description="Carry the request out once per key (per user)."
)


class HasRole(permissions.BasePermission):
    """The view's `perm` (a model permission that hosts.roles gives to roles)."""

    def has_permission(self, request: Request, view) -> bool:
        perm = getattr(view, "perm", None)
        if perm is None or not request.user or not request.user.is_authenticated:
            return perm is None
        if request.user.has_perm(perm):
            return True
        self.message = needs_role(perm, view.doing)
        return False


class ApiView(APIView):
    """Every API view: the token's audit marker for the request, no login redirect (the
    API answers 401 itself), the role check."""

    permission_classes = [permissions.IsAuthenticated, HasRole]
    perm: str | None = None
    doing = ""

    @classmethod
    def as_view(cls, **initkwargs):
        return login_not_required(super().as_view(**initkwargs))

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        self._via: Token[str] | None = AUDIT_VIA.set(via_of(request))

    def finalize_response(self, request: Request, response, *args, **kwargs):
        marker = getattr(self, "_via", None)
        if marker is not None:
            AUDIT_VIA.reset(marker)
            self._via = None
        return super().finalize_response(request, response, *args, **kwargs)


class Pages(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def first_message(fields: dict[str, list[str]]) -> str:
    for messages in fields.values():
        if messages:
            return messages[0]
    return "The request is invalid."
