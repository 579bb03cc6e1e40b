"""Reading one domain: its handle (looked up once per connection), state, definitions
(live and persistent), disks and their sizes, and which domains use a file."""

from __future__ import annotations

from typing import Self

import libvirt

from hosts import domxml
from hosts.adapter.connection import Connection
from hosts.adapter.errors import DomainGone
from hosts.records import DiskRecord

DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

# States in which libvirt's XML carries no backing chain (no QEMU process to ask).
STOPPED_STATES = frozenset({"shutoff", "crashed"})


def _disk_paths(disk: DiskRecord) -> set[str]:
    return {disk.source, *(layer.path for layer in disk.chain), disk.job.mirror_path if disk.job else ""}


class DomainReader(Connection):
    """What a connection can read about domains, by uuid."""

    def __enter__(self) -> Self:
        self._handles: dict[str, libvirt.virDomain] = {}
        return super().__enter__()

    def domain(self, uuid: str) -> libvirt.virDomain:
        """The domain's handle, looked up once per connection: a handle stays valid while
        the connection is open, and calls on it raise DomainGone once the domain is."""
        handle = self._handles.get(uuid)
        if handle is None:
            handle = self._handles[uuid] = self._call(self.open_conn.lookupByUUIDString, uuid)
        return handle

    def domain_state(self, uuid: str) -> str:
        state, _reason = self._call(self.domain(uuid).state)
        return DOMAIN_STATES.get(state, "nostate")

    def is_persistent(self, uuid: str) -> bool:
        return bool(self._call(self.domain(uuid).isPersistent))

    def live_xml(self, uuid: str) -> str:
        return self._call(self.domain(uuid).XMLDesc, 0)

    def inactive_xml(self, uuid: str) -> str:
        return self._call(self.domain(uuid).XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)

    def live_disks(self, uuid: str) -> dict[str, DiskRecord]:
        return {d.target: d for d in domxml.parse_disks(self.live_xml(uuid))}

    def inactive_disks(self, uuid: str) -> dict[str, DiskRecord]:
        return {d.target: d for d in domxml.parse_disks(self.inactive_xml(uuid))}

    def disk_capacity(self, uuid: str, target: str) -> int:
        """The disk's virtual size in bytes (what the guest sees), from virDomainGetBlockInfo."""
        capacity, _allocation, _physical = self._call(self.domain(uuid).blockInfo, target, 0)
        return int(capacity)

    def users_of(self, path: str) -> list[str]:
        """The domains whose live or persistent definition uses `path` as a source, a
        backing layer or a mirror target. Asked before a file is removed (invariant 10)."""
        users = []
        for dom in self._call(self.open_conn.listAllDomains, 0):
            try:
                if self._domain_uses(dom, path):
                    users.append(dom.name())
            except DomainGone:
                continue  # it went away while we looked: it uses nothing now
        return users

    def _domain_uses(self, dom: libvirt.virDomain, path: str) -> bool:
        flags = [libvirt.VIR_DOMAIN_XML_INACTIVE] if self._call(dom.isPersistent) else []
        if self._call(dom.isActive):
            flags.insert(0, 0)
        for flag in flags:
            xml = self._call(dom.XMLDesc, flag)
            if any(path in _disk_paths(disk) for disk in domxml.parse_disks(xml)):
                return True
        return False
