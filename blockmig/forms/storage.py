"""Where a host's copies may go, as the pages offer it: its allowed storage roots (with free
space where it can be told) and its pools of block devices. Read by the request form page
and the evacuation plan form; separate from the forms because it reads the host, not input.
"""

from __future__ import annotations

import posixpath
import shutil
from dataclasses import dataclass

from blockmig.progress import format_bytes
from hosts.adapter import ConnectFailure, LibvirtFailure, open_block_jobs
from hosts.records import BlockPool

LOCAL_URI = "qemu:///system"


@dataclass(frozen=True)
class Root:
    """An allowed storage root of a hypervisor and, where it can be told, its free space."""

    path: str
    free: int | None
    why_unknown: str = ""

    @property
    def free_text(self) -> str:
        if self.free is None:
            return f"free space unknown{f' ({self.why_unknown})' if self.why_unknown else ''}"
        return f"{format_bytes(self.free)} free"


def storage_roots(hypervisor) -> list[Root]:
    """The hypervisor's allowed roots. Free space only for the local system QEMU, whose
    files are this machine's files; a remote host's disks are not ours to stat."""
    roots = []
    for path in hypervisor.allowed_roots or []:
        if hypervisor.uri != LOCAL_URI:
            roots.append(Root(path, None, "remote host"))
            continue
        try:
            roots.append(Root(path, shutil.disk_usage(path).free))
        except OSError:
            roots.append(Root(path, None, "directory not found"))
    return roots


@dataclass(frozen=True)
class OfferedPool:
    """A libvirt pool of block devices (a volume group for `logical`), as the form offers it:
    its volumes are destinations only where its directory is an allowed root."""

    pool: BlockPool
    allowed: bool

    @property
    def free_text(self) -> str:
        return f"{format_bytes(self.pool.available)} free of {format_bytes(self.pool.capacity)}"


BLOCK_STORAGE_TIMEOUT = 3.0  # seconds the request page waits for the host's pools


def block_storage(hypervisor) -> tuple[list[OfferedPool], str]:
    """The host's block-device pools for the request form, and why none could be read ("")
    when the host did not answer. Pools outside the allowed roots are listed, marked."""
    if not hypervisor.enabled:
        return [], ""
    try:
        with open_block_jobs(hypervisor.uri, BLOCK_STORAGE_TIMEOUT) as host:
            pools = host.block_pools()
    except (ConnectFailure, LibvirtFailure) as problem:
        return [], str(problem)
    roots = [posixpath.normpath(r) for r in hypervisor.allowed_roots or []]
    return [OfferedPool(pool, posixpath.normpath(pool.target) in roots) for pool in pools], ""
