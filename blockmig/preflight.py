"""Checks a migration request must pass before anything changes.

Each problem is a Refused with a message that says what to fix and the form field it
belongs to. The checks that need no host run first (cheap, and testable without libvirt);
then one connection answers the rest. The engine runs the host checks again before it
starts the copy, because time passes between a request and a worker picking it up.
"""

from __future__ import annotations

import math
import os
import posixpath
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.db.models import Q

from blockmig.errors import Refused
from blockmig.models import MigrationDisk
from hosts.adapter import BlockJobHost, ConnectFailure, LibvirtFailure, open_block_jobs, uri_is_local
from hosts.domxml import domain_identity, parse_disks
from hosts.models import Disk, Hypervisor
from hosts.records import DiskRecord

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User

DEST_FORMATS = ("qcow2", "raw")
MODES = ("shallow", "full")


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


@dataclass
class Plan:
    domain_name: str
    persistent: bool
    transient_job: bool  # libvirt on this host has VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB
    disks: list[PlannedDisk] = field(default_factory=list)


# -- checks that need no host -----------------------------------------------------------


def check_permission(user: User | AnonymousUser) -> None:
    if not user.has_perm("blockmig.add_migration"):
        raise Refused("You need the operator role to start a migration.")


# The limits libvirt and the database put on the numbers. Bandwidth is stored as a
# PositiveIntegerField (PostgreSQL integer) and libvirt takes MiB/s up to 2^43 - 1.
MAX_BANDWIDTH_MIB = 2**31 - 1
MIN_GRANULARITY = 512
MAX_GRANULARITY = 64 * 2**20
MAX_BUF_SIZE = 2**31 - 1  # libvirt's buf-size is an unsigned int of bytes
MAX_NAME_BYTES = 255  # one file or directory name (NAME_MAX)


def check_bandwidth(bandwidth_mib: object) -> int:
    try:
        # Any input (form, API, stored row): what float() cannot read is refused below.
        value = float(bandwidth_mib)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise Refused("Bandwidth must be a whole number of MiB/s (0 = unlimited).", "bandwidth_mib") from None
    if not math.isfinite(value) or value != int(value) or isinstance(bandwidth_mib, bool):
        raise Refused("Bandwidth must be a whole number of MiB/s (0 = unlimited).", "bandwidth_mib")
    if value < 0:
        raise Refused("Bandwidth cannot be negative; use 0 for unlimited.", "bandwidth_mib")
    if value > MAX_BANDWIDTH_MIB:
        raise Refused(f"Bandwidth can be at most {MAX_BANDWIDTH_MIB} MiB/s; use 0 for unlimited.", "bandwidth_mib")
    return int(value)


def check_granularity(granularity: object) -> None:
    if granularity is None:
        return
    if (
        not isinstance(granularity, int)
        or not MIN_GRANULARITY <= granularity <= MAX_GRANULARITY
        or granularity & (granularity - 1)
    ):
        raise Refused("Granularity must be a power of two from 512 B to 64 MiB (512, 1024, … 67108864).", "granularity")


def check_buf_size(buf_size: object) -> None:
    if buf_size is not None and (not isinstance(buf_size, int) or not 1 <= buf_size <= MAX_BUF_SIZE):
        raise Refused(f"Buffer size must be from 1 to {MAX_BUF_SIZE} bytes.", "buf_size")


def check_options(*, mode: str, dest_format: str, granularity: object, buf_size: object) -> None:
    if mode not in MODES:
        raise Refused(f"Mode must be one of {', '.join(MODES)}.", "mode")
    if dest_format not in DEST_FORMATS:
        raise Refused(f"Destination format must be one of {', '.join(DEST_FORMATS)}.", "dest_format")
    check_granularity(granularity)
    check_buf_size(buf_size)


def _control_character(text: str) -> int | None:
    """Index of the first C0 or C1 control character (newline, tab, NUL, DEL …), if any."""
    for index, char in enumerate(text):
        if ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F:
            return index
    return None


def check_path_text(path: str, field: str = "destination") -> None:
    """Characters a path may hold: libvirt and QEMU report paths with control characters
    differently from how they were given, so such a path could never be matched again."""
    index = _control_character(path)
    if index is not None:
        raise Refused(
            f"The path has a control character (a newline, tab or similar, U+{ord(path[index]):04X}) at position "
            f"{index + 1}: type it without one.",
            field,
        )
    for part in path.split("/"):
        size = len(part.encode("utf-8", "surrogatepass"))
        if size > MAX_NAME_BYTES:
            raise Refused(
                f"The name “{part[:24]}…” is {size} bytes long; a file or directory name may have at most "
                f"{MAX_NAME_BYTES} bytes.",
                field,
            )


def _inside(path: str, root: str) -> bool:
    return path != root and posixpath.commonpath([root, path]) == root


def check_destination_shape(destination: str, allowed_roots: list[str], source: str = "") -> str:
    """The normalised destination, if it is an absolute file path under an allowed root.
    The one place these rules live: the request form shows these messages as field errors."""
    check_path_text(destination or "")
    destination = (destination or "").strip()
    if not destination:
        raise Refused("Give the destination file's path.", "destination")
    if not destination.startswith("/"):
        raise Refused("Give an absolute path (starting with /) inside one of the allowed roots.", "destination")
    if ".." in destination.split("/"):
        raise Refused("The path may not contain “..”: name the directory directly.", "destination")
    if destination.endswith("/"):
        raise Refused("Give a file name, not a directory.", "destination")
    path = posixpath.normpath(destination)
    roots = [posixpath.normpath(r) for r in allowed_roots if r]
    if not roots:
        raise Refused("This host has no allowed storage roots yet; an admin must add one to the hypervisor.", "destination")
    if not any(_inside(path, root) for root in roots):
        raise Refused(f"{path} is outside the allowed roots ({', '.join(roots)}).", "destination")
    if source and path == posixpath.normpath(source):
        raise Refused("The destination is the disk's current source; choose a new file.", "destination")
    return path


def check_disk_list(disks: list[DiskRequest]) -> None:
    if not disks:
        raise Refused("Choose at least one disk to migrate.", "disks")
    targets = [d.target for d in disks]
    if len(set(targets)) != len(targets):
        raise Refused("Each disk can appear only once in a migration.", "disks")
    destinations = [posixpath.normpath(d.destination) for d in disks if d.destination]
    if len(set(destinations)) != len(destinations):
        raise Refused("Two disks cannot be copied to the same destination.", "destination")


def check_request_shape(
    *,
    user: User | AnonymousUser,
    hypervisor: Hypervisor,
    disks: list[DiskRequest],
    mode: str,
    dest_format: str,
    bandwidth_mib: object,
    granularity: object,
    buf_size: object,
) -> list[DiskRequest]:
    check_permission(user)
    check_bandwidth(bandwidth_mib)
    check_options(mode=mode, dest_format=dest_format, granularity=granularity, buf_size=buf_size)
    check_disk_list(disks)
    if not hypervisor.enabled:
        raise Refused(f"{hypervisor.name} is disabled: an admin must enable it first.")
    return [DiskRequest(d.target, check_destination_shape(d.destination, hypervisor.allowed_roots)) for d in disks]


# -- checks against the host ---------------------------------------------------------------


def check_on_host(
    host: BlockJobHost,
    *,
    hypervisor: Hypervisor,
    domain_uuid: str,
    disks: list[DiskRequest],
    reuse_destination: bool,
    synchronous_writes: bool,
    allowed_roots: list[str],
    migration_id: int | None = None,
) -> Plan:
    try:
        state = host.domain_state(domain_uuid)
    except LibvirtFailure:
        raise Refused(f"No domain with UUID {domain_uuid} on {hypervisor.name}: refresh the inventory.") from None
    live_xml = host.live_xml(domain_uuid)
    name = domain_identity(live_xml)[1]
    if state != "running":
        raise Refused(f"{name} is {state}, not running: a block copy needs a running domain.")
    live = {d.target: d for d in parse_disks(live_xml)}
    if synchronous_writes and not host.supports_sync_writes():
        raise Refused(
            f"{hypervisor.name} cannot do synchronous writes (needs libvirt ≥ 8.0 and QEMU ≥ 3.0).", "synchronous_writes"
        )
    plan = Plan(domain_name=name, persistent=host.is_persistent(domain_uuid), transient_job=host.supports_transient_job())
    for request in disks:
        disk = live.get(request.target)
        if disk is None:
            raise Refused(f"{name} has no disk {request.target} (it has {', '.join(sorted(live)) or 'none'}).", "disks")
        if not disk.source or disk.type not in ("file", "block"):
            raise Refused(f"{name}/{request.target} has no local file or block source to copy.", "disks")
        check_disk_movable(disk, name)
        job = host.job(domain_uuid, request.target, live)
        if job is not None:
            where = f" to {job.mirror_path}" if job.mirror_path else ""
            raise Refused(
                f"A {job.type} block job{where} is already running on {name}/{request.target}; wait for it or cancel it first.",
                "disks",
            )
        busy = MigrationDisk.objects.filter(hypervisor=hypervisor, domain_uuid=domain_uuid, target=request.target, active=True)
        if migration_id is not None:
            busy = busy.exclude(migration_id=migration_id)
        other = busy.first()
        if other is not None:
            raise Refused(f"Migration #{other.migration_id} is already moving {name}/{request.target}.", "disks")
        chain = [layer.path for layer in disk.chain if layer.path]
        check_destination_on_host(host, request.destination, chain, reuse_destination, allowed_roots)
        check_not_another_disk(hypervisor, request.destination)
        plan.disks.append(PlannedDisk(request.target, disk.source, chain, request.destination))
    return plan


# Devices that hold no guest data worth moving (install media, floppies).
NOT_MIGRATABLE_DEVICES = ("cdrom", "floppy")


def check_disk_movable(disk: DiskRecord, domain_name: str) -> None:
    """What a disk is, rather than where it goes, that keeps it where it is."""
    where = f"{domain_name}/{disk.target}"
    if disk.device in NOT_MIGRATABLE_DEVICES:
        raise Refused(f"{where} is a {disk.device}: it holds no guest data to move (eject or detach it instead).", "disks")
    if disk.shareable:
        raise Refused(
            f"{where} is shareable (other domains may write it): a mirror would miss their writes; detach it from the "
            "other domains first.",
            "disks",
        )
    if disk.readonly:
        raise Refused(f"{where} is read-only: move its image while the domain is stopped, or attach it read-write.", "disks")


def check_not_another_disk(hypervisor: Hypervisor, destination: str) -> None:
    """A destination that any domain on the host uses (as the inventory last saw it)."""
    candidates = {destination}
    if uri_is_local(hypervisor.uri) and os.path.lexists(destination):
        candidates.add(os.path.realpath(destination))
    used = (
        Disk.objects.filter(domain__hypervisor=hypervisor)
        .filter(Q(source__in=candidates) | Q(layers__path__in=candidates))
        .select_related("domain")
        .first()
    )
    if used is not None:
        raise Refused(f"{destination} is in use by {used.domain.name}/{used.target}: choose a new file.", "destination")


def check_destination_on_host(
    host: BlockJobHost, destination: str, chain: list[str], reuse: bool, allowed_roots: list[str]
) -> None:
    if destination in chain:
        what = "the disk's current source" if destination == chain[0] else "a layer of the disk's backing chain"
        raise Refused(f"The destination {destination} is {what}: choose a new file.", "destination")
    directory = posixpath.dirname(destination)
    if host.is_local:
        # Symlinks inside a root must not lead out of it: the directory's and, when the file
        # exists (reuse), the file's own real path must both stay inside a real root.
        roots = [os.path.realpath(r) for r in allowed_roots]
        real_dir = os.path.realpath(directory)
        if os.path.isdir(directory) and not any(real_dir == r or _inside(real_dir, r) for r in roots):
            raise Refused(
                f"The destination's directory {directory} leads outside the allowed storage (to {real_dir}).", "destination"
            )
        if os.path.lexists(destination):
            real = os.path.realpath(destination)
            if not any(_inside(real, r) for r in roots):
                raise Refused(
                    f"The destination {destination} is a link that leads outside the allowed storage (to {real}).", "destination"
                )
        if os.path.realpath(destination) in [os.path.realpath(p) for p in chain]:
            raise Refused(f"The destination {destination} is a layer of the disk's chain.", "destination")
    if host.directory_exists(directory) is False:
        raise Refused(f"The directory {directory} does not exist on the host: create it first.", "destination")
    exists = host.path_exists(destination)
    if exists and not reuse:
        raise Refused(
            f"{destination} already exists: choose another name, or tick “reuse” if it was prepared for this copy.", "destination"
        )
    if reuse and exists is False:
        raise Refused(f"“Reuse” needs an existing {destination}, and there is none.", "destination")


def preflight_request(
    *,
    user: User | AnonymousUser,
    hypervisor: Hypervisor,
    domain_uuid: str,
    disks: list[DiskRequest],
    mode: str = "shallow",
    dest_format: str = "qcow2",
    reuse_destination: bool = False,
    bandwidth_mib: object = 0,
    synchronous_writes: bool = False,
    granularity: object = None,
    buf_size: object = None,
    timeout: float = 10.0,
) -> Plan:
    """Everything a request must pass. Raises Refused; never changes anything."""
    normalised = check_request_shape(
        user=user,
        hypervisor=hypervisor,
        disks=disks,
        mode=mode,
        dest_format=dest_format,
        bandwidth_mib=bandwidth_mib,
        granularity=granularity,
        buf_size=buf_size,
    )
    try:
        with open_block_jobs(hypervisor.uri, timeout) as host:
            return check_on_host(
                host,
                hypervisor=hypervisor,
                domain_uuid=domain_uuid,
                disks=normalised,
                reuse_destination=reuse_destination,
                synchronous_writes=synchronous_writes,
                allowed_roots=hypervisor.allowed_roots,
            )
    except ConnectFailure as failure:
        raise Refused(f"{hypervisor.name} is unreachable: {failure.message}") from None
    except LibvirtFailure as failure:
        raise Refused(f"{hypervisor.name} refused a preflight check: {failure}") from None
