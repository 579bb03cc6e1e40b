"""The audit trail (`/audit/`) and its export as a CSV or JSON file (`/audit/export/`),
both over the same filters (`selectors.audit_events`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime

from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render

from blockmig import selectors
from blockmig.forms.audit_filter import AuditFilterForm
from blockmig.models import AuditEvent
from hosts.roles import deny

EVENTS_PER_PAGE = 50
EXPORT_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def audit_list(request: HttpRequest) -> HttpResponseBase:
    if not request.user.has_perm("blockmig.view_auditevent"):
        deny("blockmig.view_auditevent", "Reading the audit trail")
    form = AuditFilterForm(request.GET or None, **selectors.audit_filter_choices())
    filters = form.filters() if form.is_bound else {}
    events = selectors.audit_events(**filters)
    fmt = request.GET.get("format", "")
    if fmt:
        return _export(request, form, events, fmt)
    page = Paginator(events, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    selectors.with_words(page.object_list)
    return render(request, "blockmig/audit_list.html", {"form": form, "page": page, "filtered": bool(filters)})


def audit_export(request: HttpRequest) -> HttpResponseBase:
    """The filtered audit trail as a file: `/audit/export/?format=csv|json&<filters>`."""
    if not request.user.has_perm("blockmig.view_auditevent"):
        deny("blockmig.view_auditevent", "Reading the audit trail")
    form = AuditFilterForm(request.GET or None, **selectors.audit_filter_choices())
    events = selectors.audit_events(**(form.filters() if form.is_bound else {}))
    return _export(request, form, events, request.GET.get("format", "csv"))


def _export(request: HttpRequest, form: AuditFilterForm, events: QuerySet[AuditEvent], fmt: str) -> HttpResponseBase:
    if fmt not in EXPORT_TYPES:
        return HttpResponse("format must be csv or json\n", status=400, content_type="text/plain")
    if form.is_bound and form.errors:
        # Never export a bigger set than the person asked for because one filter was bad.
        text = "; ".join(f"{k}: {' '.join(str(m) for m in v)}" for k, v in form.errors.items())
        return HttpResponse(f"Fix the filters first: {text}\n", status=400, content_type="text/plain")
    content: Iterator[str] | AsyncIterator[str]
    if isinstance(request, ASGIRequest):
        content = selectors.export_audit_async(events, fmt)
    else:
        content = selectors.export_audit_sync(events, fmt)
    response = StreamingHttpResponse(content, content_type=EXPORT_TYPES[fmt])
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="blockmig-audit-{stamp}.{fmt}"'
    return response
