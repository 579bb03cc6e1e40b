"""What an evacuation plan must pass: its window, its source and target (no host asked), and
preflight's own checks on every disk of the plan over one connection. Building a plan runs
them all (blockmig.plans.build); approving runs preflight again and changing the window
checks it again (blockmig.plans.actions). Nothing here writes to the database."""

from __future__ import annotations

import posixpath
from collections import defaultdict
from datetime import datetime

from django.utils import timezone

from blockmig.errors import Refused
from blockmig.models import Plan, PlanDisk
from blockmig.plans.building import SOURCE_DOMAINS, SOURCE_HOST, SOURCE_ROOT, inside, space_problem
from blockmig.preflight.host import check_disk_movable, check_on_host
from blockmig.preflight.records import DiskRequest
from blockmig.preflight.shape import check_destination_shape
from hosts.adapter import BlockJobHost, ConnectFailure, LibvirtFailure, open_block_jobs
from hosts.domxml import parse_disks
from hosts.models import Hypervisor


def _check_on_host(host: BlockJobHost, hypervisor: Hypervisor, item: PlanDisk, *, kind: str, root: str, mode: str) -> str:
    """Preflight's own checks for one disk of the plan; the reason it cannot move, or ""."""
    try:
        check_destination_shape(item.destination, hypervisor.allowed_roots)
        planned = check_on_host(
            host,
            hypervisor=hypervisor,
            domain_uuid=item.domain_uuid,
            disks=[DiskRequest(item.target, item.destination)],
            reuse_destination=False,
            synchronous_writes=False,
            allowed_roots=hypervisor.allowed_roots,
        ).disks[0]
    except Refused as refused:
        return refused.message
    # The inventory may be older than the host: the live chain must still be the plan's.
    if kind == SOURCE_ROOT:
        layers = planned.source_chain or [planned.source_path]
        moving = layers[:1] if mode == "shallow" else layers
        if not all(inside(path, root) for path in moving):
            return (
                f"{item.domain_name}/{item.target} now runs on {planned.source_path}, no longer (all) in {root}: "
                "refresh the host and build the plan again."
            )
    item.source_path = planned.source_path
    return ""


def _check_live_disks(host: BlockJobHost, items: list[PlanDisk]) -> None:
    """Read-only, shareable disks and removable media, from the live XML (preflight's rule)."""
    by_domain: dict[str, list[PlanDisk]] = defaultdict(list)
    for item in items:
        if not item.blocked_reason:
            by_domain[item.domain_uuid].append(item)
    for uuid, found in by_domain.items():
        try:
            live = {d.target: d for d in parse_disks(host.live_xml(uuid))}
        except LibvirtFailure:
            continue  # check_on_host says what happened to the domain
        for item in found:
            if item.target in live:
                try:
                    check_disk_movable(live[item.target], item.domain_name)
                except Refused as refused:
                    item.blocked_reason = refused.message


def preflight_plan(plan: Plan, items: list[PlanDisk], *, timeout: float) -> tuple[int | None, str]:
    """Run preflight on every disk of the plan in one connection: sets each item's
    blocked_reason; returns the free bytes at the target and a whole-plan refusal ("" = none)."""
    hypervisor = plan.hypervisor
    try:
        with open_block_jobs(hypervisor.uri, timeout) as host:
            _check_live_disks(host, items)
            for item in items:
                if not item.blocked_reason:
                    item.blocked_reason = _check_on_host(
                        host, hypervisor, item, kind=plan.source_kind, root=plan.source_root, mode=plan.mode
                    )
            space = host.free_space(plan.target_root)
    except ConnectFailure as failure:
        return None, f"{hypervisor.name} is unreachable: {failure.message}"
    except LibvirtFailure as failure:
        return None, f"{hypervisor.name} refused a preflight check: {failure}"
    free = space[0] if space else None
    moving = [i for i in items if not i.blocked_reason]
    if not moving:
        if not items:
            return free, "Nothing to move: no disk of the chosen source is in this plan's scope."
        return free, "No disk of this plan can move: " + " ".join(sorted({i.blocked_reason for i in items}))[:900]
    return free, space_problem(needed=sum(i.bytes_to_copy for i in moving), free=free, target_root=plan.target_root)


def check_window(start: datetime | None, end: datetime | None) -> None:
    if start is None and end is None:
        return
    if start is None:
        raise Refused("Give the window's start as well as its end (or neither, for no window).", "window_start")
    if end is not None and end <= start:
        raise Refused("The window must end after it starts.", "window_end")
    if end is not None and end <= timezone.now():
        raise Refused("The window has already ended: give one that ends in the future.", "window_end")


def check_source(hypervisor: Hypervisor, kind: str, source_root: str, target_root: str, domain_uuids) -> tuple[str, str]:
    if kind not in (SOURCE_ROOT, SOURCE_HOST, SOURCE_DOMAINS):
        raise Refused("Evacuate a storage directory, a host, or chosen domains.", "source_kind")
    roots = [posixpath.normpath(r) for r in hypervisor.allowed_roots or []]
    target = posixpath.normpath(target_root.strip()) if target_root and target_root.strip() else ""
    if not roots:
        raise Refused(f"{hypervisor.name} has no allowed storage roots yet; an admin must add one first.", "target_root")
    if target not in roots:
        raise Refused(f"The target must be one of {hypervisor.name}'s allowed roots ({', '.join(roots)}).", "target_root")
    source = ""
    if kind == SOURCE_ROOT:
        source = (source_root or "").strip()
        if not source.startswith("/") or ".." in source.split("/"):
            raise Refused("Give the directory to evacuate as an absolute path without “..”.", "source_root")
        source = posixpath.normpath(source)
        if source == target or inside(target, source):
            raise Refused(f"The target {target} lies in {source}, the directory being evacuated: choose another.", "target_root")
    if kind == SOURCE_DOMAINS and not domain_uuids:
        raise Refused("Choose at least one domain to evacuate.", "domain_uuids")
    return source, target
