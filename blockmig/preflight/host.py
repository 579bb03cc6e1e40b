"""The checks one connection to the host answers: the domain runs, each disk can move and
is not busy, and each destination fits its kind. The engine runs these again before it
starts the copy, because time passes between a request and a worker picking it up."""

from __future__ import annotations

import os

from django.db.models import Q

from blockmig.errors import Refused
from blockmig.models import MigrationDisk
from blockmig.preflight.block import check_block_destination
from blockmig.preflight.files import check_destination_on_host
from blockmig.preflight.kinds import check_kind_options, destination_kind
from blockmig.preflight.nbd import check_nbd_destination
from blockmig.preflight.records import DiskRequest, Plan, PlannedDisk
from hosts.adapter import BlockJobHost, LibvirtFailure, uri_is_local
from hosts.domxml import domain_identity, parse_disks
from hosts.models import Disk, Hypervisor
from hosts.records import DiskRecord


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
