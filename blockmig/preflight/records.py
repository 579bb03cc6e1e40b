"""What preflight takes in (the disks a request names) and gives back (the plan the engine
follows once every check has passed)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DiskRequest:
    target: str
    destination: str


@dataclass(frozen=True)
class PlannedDisk:
    target: str
    source_path: str
    source_chain: list[str]  # active layer first
    destination: str
    kind: str = "file"  # file, block (a device such as an LV) or network (an NBD export)


@dataclass
class Plan:
    domain_name: str
    persistent: bool
    transient_job: bool  # libvirt on this host has VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB
    disks: list[PlannedDisk] = field(default_factory=list)
