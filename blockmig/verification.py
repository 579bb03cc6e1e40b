"""After the pivot: is the domain what was asked (invariant 3)?

Pure: the migration's disks and libvirt's answers (hosts.records) in, the problems a
person reads out; the engine (Driver.verify) asks libvirt and records the verdict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from hosts.records import DiskRecord

SHALLOW = "shallow"  # Migration.Mode.SHALLOW: the copy keeps the old backing chain


class MovedDisk(Protocol):
    """What verification reads of a MigrationDisk."""

    target: str
    destination: str
    source_chain: list[str]  # paths before the copy, active layer first


def pivot_problems(
    mode: str,
    disks: Iterable[MovedDisk],
    live: Mapping[str, DiskRecord],
    inactive: Mapping[str, DiskRecord],
    persistent: bool,
    strategy: str,
) -> list[str]:
    """Every way the pivoted domain differs from the request; empty when it is right.

    - the live source of each disk is its destination, and its chain is the destination
      on the old backing chain (shallow) or the destination alone (full);
    - a persistent domain's inactive definition (`inactive`) points at the destination too;
    - a domain that was persistent before (any `strategy` but "none") still is.
    """
    disks = list(disks)
    problems = []
    for disk in disks:
        record = live.get(disk.target)
        if record is None or record.source != disk.destination:
            problems.append(f"live {disk.target} is {record.source if record else 'missing'}, not {disk.destination}")
            continue
        expected = [disk.destination] + (disk.source_chain[1:] if mode == SHALLOW else [])
        actual = [layer.path for layer in record.chain]
        if actual != expected:
            problems.append(f"{disk.target} chain is {' ← '.join(actual)}, expected {' ← '.join(expected)}")
    if persistent:
        for disk in disks:
            source = inactive[disk.target].source if disk.target in inactive else "missing"
            if source != disk.destination:
                problems.append(f"the persistent definition's {disk.target} is {source}, not {disk.destination}")
    elif strategy != "none":
        problems.append("the domain is no longer persistent")
    return problems
