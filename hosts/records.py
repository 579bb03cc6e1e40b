"""Plain objects that cross the libvirt seam.

The adapter turns libvirt's answers into these; everything else (sync, views, the
migration engine) reads only these, so the test driver, the lab and a remote host all
look the same to the rest of the code.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ChainLayer:
    """One image in a disk's backing chain. depth 0 is the active layer."""

    depth: int
    path: str
    format: str = ""
    type: str = "file"  # file, block, network
    capacity: int | None = None
    allocation: int | None = None
    missing: bool = False  # the XML or the stats name a layer we could not find


@dataclass(frozen=True)
class BlockJobInfo:
    """A block job on one disk, whoever started it."""

    type: str  # copy, active-commit, commit, pull, backup
    cur: int = 0
    end: int = 0
    bandwidth: int = 0  # bytes/s, 0 = unlimited
    mirror_path: str = ""
    mirror_format: str = ""
    ready: bool = False


@dataclass(frozen=True)
class DiskRecord:
    target: str
    bus: str = ""
    device: str = "disk"
    type: str = "file"
    format: str = ""
    source: str = ""
    readonly: bool = False
    shareable: bool = False  # <shareable/>: other domains may write it at the same time
    chain: tuple[ChainLayer, ...] = ()
    job: BlockJobInfo | None = None
    # False when the layers end where nothing could tell what lies below (a stopped
    # domain on a remote host whose files no storage pool holds); chain_note says why,
    # or names a missing layer.
    chain_known: bool = True
    chain_note: str = ""


@dataclass(frozen=True)
class DomainRecord:
    uuid: str
    name: str
    state: str  # running, paused, shutoff, ...
    persistent: bool = True
    autostart: bool = False
    # None when the domain's stats signature is unchanged and its disks were not re-read.
    disks: tuple[DiskRecord, ...] | None = ()


@dataclass(frozen=True)
class HostFacts:
    hostname: str = ""
    driver: str = ""  # QEMU, TEST, ...
    libvirt_version: str = ""
    hypervisor_version: str = ""
    virt_type: str = ""  # kvm, qemu (TCG), test
    supports_transient_job: bool = False
    supports_sync_writes: bool = False


@dataclass
class Inventory:
    facts: HostFacts
    domains: list[DomainRecord] = field(default_factory=list)
    calls: int = 0  # libvirt round trips this inventory cost
    signatures: dict[str, str] = field(default_factory=dict)  # uuid -> bulk-stats signature


def version_string(packed: int) -> str:
    """libvirt packs versions as major * 1,000,000 + minor * 1,000 + release."""
    return f"{packed // 1_000_000}.{packed // 1000 % 1000}.{packed % 1000}"


@dataclass(frozen=True)
class BlockDevice:
    """A block device a copy could be written to, as the host reports it."""

    path: str
    size: int | None  # bytes; None when the host cannot tell
    identity: str  # "rdev:MAJOR:MINOR" locally, "volume:<key>" from a pool, "" unknown
    busy: str = ""  # why the device is in use on the host (mounted, held by LVM/md …), "" if free


@dataclass(frozen=True)
class StorageVolume:
    name: str
    path: str
    capacity: int
    key: str


@dataclass(frozen=True)
class BlockPool:
    """A libvirt storage pool whose volumes are block devices (a volume group for `logical`)."""

    name: str
    type: str  # logical, disk, iscsi, scsi, mpath
    source: str  # the volume group's name, the device …
    target: str  # directory the volumes appear in, e.g. /dev/<vg>
    capacity: int
    available: int
    volumes: tuple[StorageVolume, ...] = ()
