"""The dashboard (`/`): the hosts with their health, and the migrations block for those who
may see migrations (also served on its own for the page to load).
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from blockmig import selectors
from hosts import selectors as host_selectors
from hosts.roles import deny
from hosts.views import permission_required


@require_GET
@permission_required("hosts.view_hypervisor")
def dashboard(request: HttpRequest) -> HttpResponse:
    """Hosts with their health, and the migrations block for those who may see migrations
    (live: blockmig.live.dashboard)."""
    context: dict[str, object] = {
        "hypervisors": host_selectors.hypervisors_with_counts(),
        "totals": host_selectors.inventory_totals(),
    }
    if request.user.has_perm("blockmig.view_migration"):
        context["migration_dashboard"] = selectors.migration_dashboard()
    return render(request, "blockmig/dashboard.html", context)


def migration_dashboard_block(request: HttpRequest) -> HttpResponse:
    """The dashboard's migrations block on its own (the dashboard loads it when its view
    did not put `migration_dashboard` in the context; the live console may render it too)."""
    if not request.user.has_perm("blockmig.view_migration"):
        deny("blockmig.view_migration", "Seeing migrations")
    return render(request, "blockmig/_dashboard_migrations.html", {"migration_dashboard": selectors.migration_dashboard()})
