"""Rendering a frame: the request a render runs with, the fragments, the header line.

A frame serves every socket of one audience (blockmig.live.audience), so nothing in it may
belong to one user: no CSRF token (the page's `<body hx-headers='{"X-CSRFToken": …}'>`
gives each htmx request its user's, as django-htmx documents), no session, no cookie but
the time zone, which is part of the frame's key.
"""

from __future__ import annotations

import contextlib
import zoneinfo
from collections.abc import Iterable, Iterator
from typing import Any

from django.http import HttpRequest
from django.template.loader import render_to_string
from django.test import RequestFactory
from django.utils import timezone
from django_htmx.middleware import HtmxDetails

_request_factory = RequestFactory()

# With no token in the context `{% csrf_token %}` renders nothing (Django warns under DEBUG),
# so a form that a pushed fragment carries can never hold another user's token; its htmx post
# carries the header from the page's body instead.
NO_CSRF_TOKEN = {"csrf_token": ""}


def render_request(path: str, user: Any, secure: bool) -> HttpRequest:
    """A GET of `path` as `user` (whose permissions the templates ask about), with no
    session and no cookies: what a frame shared by an audience may depend on."""
    request = _request_factory.get(path, secure=secure)
    request.user = user
    # What django-htmx's middleware would set; HttpRequest does not declare it.
    request.htmx = HtmxDetails(request)  # type: ignore[attr-defined]
    return request


@contextlib.contextmanager
def in_timezone(name: str) -> Iterator[None]:
    """Render times in the browser's zone (its `tz` cookie), UTC if none or unknown."""
    try:
        timezone.activate(zoneinfo.ZoneInfo(name)) if name else timezone.deactivate()
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        timezone.deactivate()
    try:
        yield
    finally:
        timezone.deactivate()


def render_fragment(name: str, context: dict, request: HttpRequest) -> str:
    """One template or `{% partialdef %}` (`page.html#name`), as pushed: without a token."""
    return render_to_string(name, {**context, **NO_CSRF_TOKEN}, request=request).strip()


def render_fragments(names: Iterable[str], context: dict, request: HttpRequest) -> str:
    return "\n".join(render_fragment(name, context, request) for name in names)


def header(page: str, seen: dict[tuple, int]) -> str:
    """The frame's first line, `<!-- live migration migration:7=42 -->`: the seqs it covers
    (tests and the benches read it)."""
    marks = " ".join(f"{kind}:{ident}={seq}" for (kind, ident), seq in sorted(seen.items()))
    return f"<!-- live {page} {marks} -->"
