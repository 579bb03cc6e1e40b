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
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.db.models import Q

from blockmig.errors import Refused
from blockmig.models import MigrationDisk
from blockmig.progress import format_bytes
from hosts.adapter import (
    NBD_DEFAULT_PORT,
    BlockJobHost,
    ConnectFailure,
    LibvirtFailure,
    open_block_jobs,
    uri_is_local,
)
from hosts.domxml import domain_identity, parse_disks
from hosts.models import Disk, Hypervisor
from hosts.nbd import NbdUnreadable, nbd_export_size
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
    kind: str = "file"  # file, block (a device such as an LV) or network (an NBD export)


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


def destination_root(destination: str, allowed_roots: list[str]) -> str | None:
    """The allowed root (as the host lists it) that holds `destination`, the innermost one
    when roots nest; None for a network destination or a path outside every root. The copy
    limits of blockmig.limits count copies per root by this."""
    if not destination.startswith("/"):
        return None
    path = posixpath.normpath(destination)
    holding = [r for r in allowed_roots if r and _inside(path, posixpath.normpath(r))]
    return max(holding, key=lambda r: len(posixpath.normpath(r)), default=None)


def check_destination_shape(destination: str, allowed_roots: list[str], source: str = "") -> str:
    """The normalised destination, if it is an absolute file path under an allowed root or
    an NBD export (nbd://host:port/export). The one place these rules live: the request
    form shows these messages as field errors."""
    if is_url((destination or "").strip()):
        return parse_nbd_url(destination.strip()).url
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
    mode: str | None = None,
    dest_format: str | None = None,
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
        kind = destination_kind(host, request.destination)
        if mode is not None and dest_format is not None:
            check_kind_options(kind, request.destination, mode=mode, dest_format=dest_format, reuse=reuse_destination)
        if kind == "file":
            check_destination_on_host(host, request.destination, chain, reuse_destination, allowed_roots)
        else:
            where = f"{name}/{request.target}"
            capacity = host.disk_capacity(domain_uuid, request.target)
            if kind == "block":
                check_block_destination(host, request.destination, chain, capacity, where)
            else:
                check_nbd_destination(request.destination, capacity, where)
        check_not_another_disk(hypervisor, request.destination)
        plan.disks.append(PlannedDisk(request.target, disk.source, chain, request.destination, kind))
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


# -- destinations beyond files: block devices and NBD exports ---------------------------
#
# A block device (an LVM logical volume, a partition, a LUN) or an NBD export is the disk
# itself: the copy is raw and full, onto a device or export that exists already (libvirt's
# REUSE_EXT), of exactly the source's virtual size: QEMU's mirror cannot grow a device, and
# refused a bigger one too in the lab (QEMU 7.2). blockmig never creates or removes either.

NBD_EXAMPLE = "nbd://HOST:PORT/EXPORT, for example nbd://10.0.0.5:10809/vm1-vda"
NBD_SIZE_TIMEOUT = 10.0  # seconds qemu-img may take to read an export's size
MAX_URL_CHARS = 1024  # what MigrationDisk.destination holds (the NBD protocol allows longer names)
_NBD_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
_NBD_EXPORT = re.compile(r"^[A-Za-z0-9._~+=:@/-]+$")
DEVICE_DIRECTORY = "/dev/"  # nothing under it is ever a regular file a copy may create


@dataclass(frozen=True)
class NbdExport:
    host: str
    port: int
    export: str

    @property
    def url(self) -> str:
        """The form libvirt's XML reads back as (hosts.domxml), so it compares as stored."""
        return f"nbd://{self.host}:{self.port}/{self.export}"


def is_url(destination: str) -> bool:
    return "://" in destination or destination.lower().startswith("nbd:")


def parse_nbd_url(text: str) -> NbdExport:
    """An NBD export over TCP, or Refused saying what to change in the URL."""
    index = _control_character(text)
    if index is not None:
        raise Refused(
            f"The URL has a control character (U+{ord(text[index]):04X}) at position {index + 1}: type it without one.",
            "destination",
        )
    if len(text) > MAX_URL_CHARS:
        raise Refused(f"An NBD URL may have at most {MAX_URL_CHARS} characters.", "destination")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise Refused(f"The port in “{text}” must be a number from 1 to 65535 ({NBD_EXAMPLE}).", "destination") from None
    if parts.scheme.lower() != "nbd":
        raise Refused(
            f"Only NBD exports over TCP can be network destinations ({NBD_EXAMPLE}); “{parts.scheme}://” is not one.",
            "destination",
        )
    if parts.username is not None or parts.password is not None:
        raise Refused("NBD has no user names or passwords: remove the “…@” before the host.", "destination")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise Refused("Remove the “?…” or “#…” part: options such as TLS are not supported for NBD destinations.", "destination")
    host = parts.hostname or ""
    if not host:
        raise Refused(f"Name the NBD server's host: {NBD_EXAMPLE}.", "destination")
    if ":" in host or not _NBD_HOST.match(host):
        raise Refused(
            f"“{host}” is not a host name or IPv4 address blockmig accepts for an NBD server (IPv6 literals are not "
            "supported yet).",
            "destination",
        )
    if port == 0:
        raise Refused(f"The port in “{text}” must be a number from 1 to 65535 ({NBD_EXAMPLE}).", "destination")
    port = port or NBD_DEFAULT_PORT
    export = parts.path[1:]
    if not export:
        raise Refused(
            f"Name the export after the port: nbd://{host}:{port}/EXPORT (the name qemu-nbd serves with -x).", "destination"
        )
    if not _NBD_EXPORT.match(export):
        raise Refused(
            f"The export name “{export}” has a character blockmig does not pass on (spaces, %, quotes …): use letters, "
            "digits and . _ - / : + = ~ @.",
            "destination",
        )
    return NbdExport(host.lower(), port, export)


def is_network_destination(destination: str) -> bool:
    """An NBD export (stored normalised by check_destination_shape)."""
    return destination.startswith("nbd://")


def destination_medium(host: BlockJobHost, destination: str) -> str:
    """file, block or network, as the host sees the destination now."""
    if is_network_destination(destination):
        return "network"
    if host.block_device(destination) is not None:
        return "block"
    return "file"


def destination_kind(host: BlockJobHost, destination: str) -> str:
    """file, block or network, for a request. A path under /dev/ must be a block device the
    host reports: a copy never creates a regular file there (blockmig makes no LVs)."""
    kind = destination_medium(host, destination)
    if kind == "file" and destination.startswith(DEVICE_DIRECTORY):
        raise Refused(
            f"There is no block device {destination} on the host: create the logical volume first, of exactly the "
            "disk's virtual size (lvcreate -L SIZEb -n NAME VG), then tick “reuse”.",
            "destination",
        )
    return kind


def check_kind_options(kind: str, destination: str, *, mode: str, dest_format: str, reuse: bool) -> None:
    """A block device or an NBD export takes a raw, full copy onto what exists already."""
    if kind == "file":
        return
    what = "a block device" if kind == "block" else "an NBD export"
    if dest_format != "raw":
        raise Refused(
            f"{destination} is {what}: the copy is written onto it as raw, so choose the raw format (and a full copy).",
            "dest_format",
        )
    if mode != "full":
        raise Refused(
            f"A copy onto {what} must be full: raw {destination} cannot point at the backing chain. Choose a full copy.",
            "mode",
        )
    if not reuse:
        raise Refused(
            f"{destination} is {what} that exists already: tick “reuse” (blockmig copies onto it and never creates or "
            "removes it).",
            "reuse_destination",
        )


def check_destination_size(destination: str, size: int, capacity: int, where: str) -> None:
    """The device or export must hold exactly the disk's virtual size."""
    if size < capacity:
        raise Refused(
            f"{destination} is too small: it holds {size} bytes ({format_bytes(size)}) and {where} has a virtual size of "
            f"{capacity} bytes ({format_bytes(capacity)}). Give one of exactly {capacity} bytes.",
            "destination",
        )
    if size > capacity:
        raise Refused(
            f"{destination} holds {size} bytes ({format_bytes(size)}), more than the virtual size of {where}, "
            f"{capacity} bytes ({format_bytes(capacity)}): QEMU mirrors only onto a target of the same size. Give one of "
            f"exactly {capacity} bytes.",
            "destination",
        )


def check_block_destination(host: BlockJobHost, destination: str, chain: list[str], capacity: int, where: str) -> None:
    device = host.block_device(destination)
    if device is None:
        raise Refused(f"{destination} is no longer a block device on the host.", "destination")
    if host.is_local:
        real = os.path.realpath(destination)
        if real in [os.path.realpath(p) for p in chain]:
            raise Refused(f"{destination} is {where}'s own device (or a layer of its chain): choose another.", "destination")
    elif destination in chain:
        raise Refused(f"{destination} is {where}'s own device (or a layer of its chain): choose another.", "destination")
    if device.busy:
        raise Refused(f"{destination} is in use on the host ({device.busy}): choose a free device.", "destination")
    if device.size is None:
        raise Refused(
            f"The host cannot tell the size of {destination}: put its volume group under a libvirt storage pool "
            "(type logical) so blockmig can check it.",
            "destination",
        )
    check_destination_size(destination, device.size, capacity, where)


def check_nbd_destination(url: str, capacity: int, where: str) -> None:
    """The size an export serves, read from blockmig's own machine with qemu-img: an NBD
    export reports no identity, so its size is what can be checked (docs/engine.md)."""
    try:
        size = nbd_export_size(url, NBD_SIZE_TIMEOUT)
    except NbdUnreadable as problem:
        raise Refused(
            f"blockmig could not read the export {url} ({problem}): check that qemu-nbd serves it there "
            "(qemu-nbd --persistent -x EXPORT -p PORT …) and that this machine can reach that host and port.",
            "destination",
        ) from None
    check_destination_size(url, size, capacity, where)


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
                mode=mode,
                dest_format=dest_format,
            )
    except ConnectFailure as failure:
        raise Refused(f"{hypervisor.name} is unreachable: {failure.message}") from None
    except LibvirtFailure as failure:
        raise Refused(f"{hypervisor.name} refused a preflight check: {failure}") from None
