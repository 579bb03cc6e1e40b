"""The migrations list (`/migrations/`), filtered by state and paged.

For the live console (issue 4): `blockmig/migration_list.html#migration_row` renders from
`{"migration": m}` after `selectors.with_progress([m])`.
"""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from blockmig import selectors
from blockmig.states import State
from hosts.models import Hypervisor
from hosts.roles import deny

MIGRATIONS_PER_PAGE = 25


def migration_list(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("blockmig.view_migration"):
        deny("blockmig.view_migration", "Seeing migrations")
    state = request.GET.get("state", "")
    if state not in State.values:
        state = ""
    page = Paginator(selectors.migrations_for_list(state), MIGRATIONS_PER_PAGE).get_page(request.GET.get("page"))
    selectors.with_progress(page.object_list)
    return render(
        request,
        "blockmig/migration_list.html",
        {
            "page": page,
            "state": state,
            "states": State.choices,
            "hypervisors": Hypervisor.objects.only("name", "auto_pivot").order_by("name"),
            "may_set_policy": request.user.has_perm("hosts.change_hypervisor"),
        },
    )
