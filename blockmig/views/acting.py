"""How a page runs an action on one object (a migration, a plan): the lifecycle-style
function decides and audits a refusal; a refusal for lack of the role is a 403, any other a
message on the object's page, and either way the person lands back on that page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from blockmig.errors import Refused


def act(request: HttpRequest, obj: Any, perm: str, call: Callable[[Any], object], done: str, page: str) -> HttpResponse:
    try:
        call(obj)
    except Refused as refused:
        if not request.user.has_perm(perm):
            raise PermissionDenied(refused.message) from None
        messages.error(request, refused.message)
    else:
        messages.success(request, done)
    return redirect(page, pk=obj.pk)
