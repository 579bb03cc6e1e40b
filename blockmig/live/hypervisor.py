"""The hypervisor page's socket, /ws/hosts/<name>/?q=<search>&page=<n>: health in the title,
the stale banner, the facts and the page of the domain table the user is looking at, from
the view's own context builder (hosts.views.hypervisor_context). The table element holds the
socket, so a new search or page opens a socket with the new query."""

from __future__ import annotations

from typing import Any

from blockmig.live import frames
from blockmig.live.cache import Shared
from blockmig.live.host import HostPageConsumer
from hosts.models import Hypervisor
from hosts.views import hypervisor_context

FRAGMENTS = [
    "hosts/hypervisor_detail.html#hypervisor_title",
    "hosts/_stale_banner.html",
    "hosts/hypervisor_detail.html#hypervisor_facts",
    "live/hypervisor_domains.html",
]


def hypervisor_page(request: Any, hypervisor_id: int, query: str, page_number: str) -> str | None:
    """The page's fragments for search `query` and `page_number`; None when the host is
    gone. Three queries: the host, the count and the page."""
    hypervisor = Hypervisor.objects.filter(pk=hypervisor_id).first()
    if hypervisor is None:
        return None
    context = {**hypervisor_context(hypervisor, query, page_number), "oob": True}
    return frames.render_fragments(FRAGMENTS, context, request)


class HypervisorConsumer(HostPageConsumer):
    """The hypervisor page; migration events are ignored (the domain table shows libvirt's
    jobs, which only a sync changes)."""

    view_permission = "hosts.view_hypervisor"

    def resolve_page(self, hypervisor: Hypervisor) -> bool:
        query = self.query
        self.table_query = query.get("q", [""])[0].strip()
        self.table_page = query.get("page", ["1"])[0]
        return True

    def wants(self, event: dict) -> bool:
        return event["type"] == "inventory.changed" and event["id"] == self.hypervisor_id

    def page_key(self) -> tuple:
        return ("hosts", self.hypervisor_id, "hypervisor", self.table_query, self.table_page)

    def render(self, request: Any, shared: Shared, variant: tuple = ()) -> str | None:
        return hypervisor_page(request, self.hypervisor_id, self.table_query, self.table_page)
