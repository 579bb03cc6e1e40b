"""The dashboard's socket, /ws/dashboard/: the migrations block (awaiting approval with the
count, active, recent) with every frame; the header's totals and the host cards (health,
last good sync, error) with a catch-up and after a sync of any host. Rendered from the
dashboard view's own selectors (blockmig.views.dashboard.dashboard) into templates/live/."""

from __future__ import annotations

from typing import Any

from blockmig import selectors
from blockmig.live import frames, publish, reauth
from blockmig.live.cache import Shared
from blockmig.live.consumer import LiveConsumer, Seen
from hosts import selectors as host_selectors

APPROVE = "blockmig.approve_migration"


def dashboard(request: Any, hosts: bool = False) -> str:
    """The dashboard's migrations block, from the same context the dashboard view gives it;
    with `hosts` (after a sync, and on every catch-up) also the header's totals and the host
    cards with their health, for a user who may see hypervisors."""
    hosts = hosts and request.user.has_perm("hosts.view_hypervisor")
    context = {
        "migration_dashboard": selectors.migration_dashboard(),
        "hypervisors": host_selectors.hypervisors_with_counts(),
        "totals": host_selectors.inventory_totals() if hosts else None,
    }
    names = ["live/dashboard_migrations.html", *(["live/dashboard_hosts.html"] if hosts else [])]
    return frames.render_fragments(names, context, request)


class DashboardConsumer(LiveConsumer):
    """The dashboard: active, awaiting approval (with the count), recent; host health."""

    min_interval = 0.5
    HOSTS = ("hosts",)
    hosts_changed = False  # an inventory event arrived since the last render

    def groups_to_join(self) -> list[str]:
        return [publish.DASHBOARD_GROUP]

    def page_key(self) -> tuple:
        return ("dashboard",)

    def audience(self) -> tuple:
        # The awaiting list offers an approver "Review" on the migrations others requested,
        # so an approver's dashboard also depends on who they are; everyone else's only on
        # their role.
        me = self.user.pk if reauth.holds(self.permissions, APPROVE) else None
        return (self.permissions, me)

    def note(self, subject: tuple, seq: int) -> None:
        if subject[0] == "hypervisor" and seq > self.seen.get(subject, 0):
            self.hosts_changed = True
        super().note(subject, seq)

    def take_variant(self, seen: Seen) -> tuple:
        hosts = self.hosts_changed or not seen  # nothing seen: a catch-up
        self.hosts_changed = False
        return self.HOSTS if hosts else ()

    def render(self, request: Any, shared: Shared, variant: tuple = ()) -> str | None:
        return dashboard(request, hosts=variant == self.HOSTS)
