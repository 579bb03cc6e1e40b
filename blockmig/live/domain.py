"""The domain page's socket, /ws/hosts/<name>/?domain=<uuid>: title and state, actions, the
stale banner, facts (state, persistent, autostart) and the disks block (table with sources,
formats and job badges, and the small chain pictures, so disks a sync adds or removes show
too), from the view's own context builder (hosts.views.domain_context).

A domain that a sync removed gets the "no longer exists" banner (last seen …) and no
actions; the rest of the page keeps its last-known state and the socket stays open (if the
domain comes back, the page follows again)."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from threading import Lock
from typing import Any

from django.http import Http404

from blockmig.live import frames
from blockmig.live.cache import Shared
from blockmig.live.host import HostPageConsumer
from hosts import selectors as host_selectors
from hosts.models import Hypervisor
from hosts.views import domain_context

FRAGMENTS = ["domain_title", "domain_actions", "domain_gone", "domain_facts", "domain_disks"]
GONE_FRAGMENTS = ["hosts/_stale_banner.html", "hosts/domain_detail.html#domain_gone", "hosts/domain_detail.html#domain_actions"]


def domain_page(request: Any, hypervisor_id: int, domain_uuid: str, last_seen: datetime | None = None) -> tuple[str | None, Any]:
    """The domain page's fragments, in a bounded number of queries whatever the number of
    disks and layers. Returns the frame (None when the host is gone) and the domain's
    `synced_at` (its "last seen"; `last_seen` again when the domain is gone)."""
    hypervisor = Hypervisor.objects.filter(pk=hypervisor_id).first()
    if hypervisor is None:
        return None, last_seen
    try:
        domain = host_selectors.domain_with_disks(hypervisor, domain_uuid)
    except Http404:
        context = {"hypervisor": hypervisor, "gone": True, "last_seen": last_seen, "oob": True}
        return frames.render_fragments(GONE_FRAGMENTS, context, request), last_seen
    context = {**domain_context(hypervisor, domain), "oob": True}
    names = ["hosts/_stale_banner.html", *(f"hosts/domain_detail.html#{name}" for name in FRAGMENTS)]
    return frames.render_fragments(names, context, request), domain.synced_at


# The "last seen" time of the domains open on domain pages (their synced_at at the last
# render that found them), shared by the sockets of this process: a socket that took its
# frames from another socket's render still knows it when the domain disappears.
_last_seen: OrderedDict[tuple[int, str], Any] = OrderedDict()
_last_seen_lock = Lock()


def note_seen(key: tuple[int, str], synced_at: Any) -> Any:
    """Remember `synced_at` (if newer) and return the latest known."""
    with _last_seen_lock:
        known = _last_seen.get(key)
        if synced_at is not None and (known is None or synced_at > known):
            known = synced_at
        if known is not None:
            _last_seen[key] = known
            _last_seen.move_to_end(key)
            while len(_last_seen) > 4096:
                _last_seen.popitem(last=False)
        return known


class DomainConsumer(HostPageConsumer):
    view_permission = "hosts.view_domain"

    def resolve_page(self, hypervisor: Hypervisor) -> bool:
        self.domain_uuid = self.query.get("domain", [""])[0].lower()
        synced_at = hypervisor.domains.filter(uuid=self.domain_uuid).values_list("synced_at", flat=True).first()
        if synced_at is None:
            return False
        self.last_seen = note_seen((self.hypervisor_id, self.domain_uuid), synced_at)
        return True

    def page_key(self) -> tuple:
        return ("hosts", self.hypervisor_id, "domain", self.domain_uuid)

    def render(self, request: Any, shared: Shared, variant: tuple = ()) -> str | None:
        key = (self.hypervisor_id, self.domain_uuid)
        last_seen = note_seen(key, None) or self.last_seen
        frame, synced_at = domain_page(request, self.hypervisor_id, self.domain_uuid, last_seen)
        self.last_seen = note_seen(key, synced_at) or self.last_seen
        return frame
