"""The audit trail with the audit page's filters, newest first, cursor-paginated."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics
from rest_framework.pagination import CursorPagination

from blockmig import selectors
from blockmig.api import serializers as s
from blockmig.api.errors import ApiError
from blockmig.api.views.base import ApiView, first_message
from blockmig.forms.audit_filter import AuditFilterForm
from blockmig.states import State


class AuditCursor(CursorPagination):
    """Newest first; a cursor stays right while new events arrive (unlike page numbers)."""

    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000
    ordering = ("-created_at", "-id")


@extend_schema(
    parameters=[
        OpenApiParameter("host", OpenApiTypes.STR, description="The hypervisor's name."),
        OpenApiParameter("domain", OpenApiTypes.STR, description="Part of the domain's name."),
        OpenApiParameter("user", OpenApiTypes.STR, description="A user name; “-” for the engine's own steps."),
        OpenApiParameter("state", OpenApiTypes.STR, enum=State.values, description="The state reached."),
        OpenApiParameter("event_type", OpenApiTypes.STR),
        OpenApiParameter("migration", OpenApiTypes.INT),
        OpenApiParameter("since", OpenApiTypes.DATETIME, description="ISO 8601; without a zone: UTC."),
        OpenApiParameter("until", OpenApiTypes.DATETIME, description="ISO 8601; without a zone: UTC."),
    ]
)
class AuditList(ApiView, generics.ListAPIView):
    """The audit trail with the audit page's filters, newest first, cursor-paginated."""

    perm, doing = "blockmig.view_auditevent", "Reading the audit trail"
    serializer_class = s.AuditEventSerializer
    pagination_class = AuditCursor

    def get_queryset(self):
        form = AuditFilterForm(self.request.query_params, **selectors.audit_filter_choices())
        if not form.is_valid():
            fields = {("non_field" if k == "__all__" else k): [str(m) for m in v] for k, v in form.errors.items()}
            raise ApiError("invalid", f"Fix the filters first: {first_message(fields)}", fields)
        return selectors.audit_events(**form.filters())
