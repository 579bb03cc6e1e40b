"""Which disks an evacuation plan takes, where each goes and how much it copies: pure.

`select_disks` reads plain facts about the host's disks (from the inventory, or from the
live XML) and returns every disk the plan is about, each either with no reason (it moves)
or with the reason it stays. The host-side checks (running domain, block jobs, destination
rules) are preflight's (blockmig.preflight) and run afterwards in blockmig.plans.checks.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from blockmig.preflight.host import NOT_MIGRATABLE_DEVICES
from blockmig.progress import format_bytes

SOURCE_ROOT, SOURCE_HOST, SOURCE_DOMAINS = "root", "host", "domains"
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class DiskFacts:
    domain_uuid: str
    domain_name: str
    target: str
    device: str = "disk"
    type: str = "file"
    source: str = ""
    chain: tuple[str, ...] = ()  # layer paths, active layer first
    sizes: tuple[int | None, ...] = ()  # bytes each layer takes on the host (None: unknown)
    capacity: int | None = None  # the disk's virtual size


@dataclass(frozen=True)
class Selected:
    disk: DiskFacts
    reason: str = ""  # why it stays; "" = it moves


def inside(path: str, root: str) -> bool:
    root = posixpath.normpath(root)
    path = posixpath.normpath(path)
    return path != root and posixpath.commonpath([root, path]) == root


def select_disks(disks: Iterable[DiskFacts], *, kind: str, mode: str, root: str = "") -> list[Selected]:
    """The disks a plan is about. From a root: shallow takes each disk whose active layer
    lies in the root, full each disk whose whole chain does; a disk with only some layers
    there is listed with why it stays. From a host or chosen domains (the caller passes only
    those domains' disks): every disk."""
    chosen = []
    for disk in disks:
        where = f"{disk.domain_name}/{disk.target}"
        if kind == SOURCE_ROOT:
            layers = list(disk.chain or ((disk.source,) if disk.source else ()))
            in_root = [path for path in layers if path and inside(path, root)]
            if not in_root:
                continue
            if mode == "shallow" and not inside(layers[0], root):
                chosen.append(
                    Selected(
                        disk,
                        f"only backing layers of {where} lie in {root} (e.g. {in_root[0]}); a shallow copy moves the "
                        "active layer alone: build a full plan to move the whole chain.",
                    )
                )
                continue
            outside = [path for path in layers if path and not inside(path, root)]
            if mode == "full" and outside:
                chosen.append(
                    Selected(
                        disk,
                        f"{where} also uses {outside[0]}, outside {root}: a full plan moves only disks whose whole chain "
                        "lies in the root; build a shallow plan to move its active layer.",
                    )
                )
                continue
        chosen.append(Selected(disk, shape_problem(disk)))
    return chosen


def shape_problem(disk: DiskFacts) -> str:
    """What the inventory alone says keeps a disk where it is ("" = nothing)."""
    where = f"{disk.domain_name}/{disk.target}"
    if disk.device in NOT_MIGRATABLE_DEVICES:
        return f"{where} is a {disk.device}: it holds no guest data to move (eject or detach it instead)."
    if not disk.source:
        return f"{where} has no source (an empty drive): nothing to move."
    if disk.type not in ("file", "block"):
        return f"{where} is a {disk.type} disk: only local files and block devices can be copied."
    return ""


def bytes_to_copy(disk: DiskFacts, mode: str) -> int:
    """What the copy writes, as well as the inventory can tell: the active layer's size on
    the host (shallow), or the whole chain's, at most the virtual size (full)."""
    sizes = list(disk.sizes) or [None]
    if mode == "shallow":
        known = sizes[0]
        return known if known is not None else (disk.capacity or 0)
    total = sum(s for s in sizes if s is not None)
    if any(s is None for s in sizes) and disk.capacity:
        return disk.capacity
    return min(total, disk.capacity) if disk.capacity else total


def destination_for(
    target_root: str, disk: DiskFacts, taken: set[str], exists: Callable[[str], bool | None] = lambda _p: False
) -> str:
    """`<root>/<domain>-<target>.qcow2`, with -2, -3 … until no other disk of this plan,
    no other plan or migration (`taken`) and no file on the host has the name."""
    stem = SAFE_NAME.sub("_", f"{disk.domain_name}-{disk.target}").strip("._") or "disk"
    number = 1
    while True:
        name = f"{stem}.qcow2" if number == 1 else f"{stem}-{number}.qcow2"
        path = posixpath.join(posixpath.normpath(target_root), name)
        if path not in taken and not exists(path):
            taken.add(path)
            return path
        number += 1


def space_problem(*, needed: int, free: int | None, target_root: str) -> str:
    """A refusal when the sum does not fit the target ("" when it fits or cannot be told)."""
    if free is None or needed <= free:
        return ""
    return (
        f"Not enough free space in {target_root}: the plan copies {format_bytes(needed)} and {format_bytes(free)} "
        f"is free. Free {format_bytes(needed - free)} there, choose another target root, or leave disks out "
        "(plan chosen domains)."
    )
