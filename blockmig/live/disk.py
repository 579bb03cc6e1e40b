"""The disk page's socket, /ws/hosts/<name>/?disk=<pk> (repeatable): the job badge, the facts
(source, format, "Mirroring to", actions), the chain picture and the layers table, and the
host's stale banner, from the view's own context builder (hosts.views.disk_context). A disk
that a sync removed gets the "no longer exists" banner; the socket stays open."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch

from blockmig import selectors
from blockmig.live import frames
from blockmig.live.cache import Shared
from blockmig.live.host import HostPageConsumer
from hosts.models import ChainLayer, Disk, Hypervisor
from hosts.views import disk_context

FRAGMENTS = ["disk_job", "disk_gone", "disk_facts", "chain_picture", "disk_layers"]


def disk_pages(request: Any, hypervisor_id: int, disk_ids: list[int], labels: dict[int, str]) -> str | None:
    """The disk page of each of `disk_ids`, in four queries whatever the number of layers;
    None when the host is gone. `labels` names the disks for their "no longer exists"."""
    hypervisor = Hypervisor.objects.filter(pk=hypervisor_id).first()
    if hypervisor is None:
        return None
    disks = list(
        Disk.objects.filter(domain__hypervisor_id=hypervisor_id, pk__in=disk_ids)
        .select_related("domain")
        .prefetch_related(Prefetch("layers", queryset=ChainLayer.objects.order_by("depth")))
    )
    owners = selectors.migration_jobs_of_domains(hypervisor, sorted({disk.domain.uuid for disk in disks})) if disks else {}
    parts = [frames.render_fragment("hosts/_stale_banner.html", {"hypervisor": hypervisor, "oob": True}, request)]
    found = set()
    for disk in disks:
        found.add(disk.pk)
        disk.domain.hypervisor = hypervisor
        disk.migration_id = owners.get((disk.domain.uuid, disk.target))
        context = {**disk_context(hypervisor, disk), "oob": True}
        parts.append(frames.render_fragments([f"hosts/disk_detail.html#{name}" for name in FRAGMENTS], context, request))
    for pk in disk_ids:
        if pk not in found and pk in labels:
            context = {"hypervisor": hypervisor, "disk": Disk(pk=pk), "gone": labels[pk], "oob": True}
            parts.append(frames.render_fragment("hosts/disk_detail.html#disk_gone", context, request))
    return "\n".join(parts)


class DiskConsumer(HostPageConsumer):
    view_permission = "hosts.view_disk"

    def resolve_page(self, hypervisor: Hypervisor) -> bool:
        self.disk_ids = sorted({int(v) for v in self.query.get("disk", [])})
        rows = Disk.objects.filter(domain__hypervisor=hypervisor, pk__in=self.disk_ids).values_list(
            "pk", "target", "domain__name"
        )
        # Kept from the handshake: the banner of a disk a sync removed still names it.
        self.disk_labels = {pk: f"{target} on {name}" for pk, target, name in rows}
        return True

    def page_key(self) -> tuple:
        # The labels too: a socket that knew a disk before a sync removed it shows its banner.
        return ("hosts", self.hypervisor_id, "disks", tuple(self.disk_ids), tuple(sorted(self.disk_labels.items())))

    def render(self, request: Any, shared: Shared, variant: tuple = ()) -> str | None:
        return disk_pages(request, self.hypervisor_id, self.disk_ids, self.disk_labels)
