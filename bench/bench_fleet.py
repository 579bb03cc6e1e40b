"""A fleet's inventory sync: 100 hypervisors x 100 domains, against bare libvirt in the same run.

    .venv/bin/python bench/bench_fleet.py [--hosts 100] [--domains 100] [--workers 16]

(a) bare: for every host, the libvirt calls a sync makes (open, host facts, listAllDomains
    x3, getAllDomainStats, and one XMLDesc per domain for a first sync; none for a
    steady-state resync), nothing done with the answers, on a thread pool of the same size.
(b) blockmig: hosts.sync.fleet.fleet_sync over the same hosts (libvirt, parsing, the database),
    first sync and steady-state resync. Wall time for the whole fleet; ratio = (b) / (a).
The hosts are libvirt test-driver node files (hosts.testnode), so the database and Python
work are measured against libvirt itself without any network in between. A throwaway
SQLite database in a temp dir unless DATABASE_URL names another; never touches var/.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from throwaway import throwaway_site  # noqa: E402  (bench/throwaway.py, beside this script)

throwaway_site("blockmig-bench-fleet-")

from django.core.management import call_command  # noqa: E402
from harness.bare_libvirt import bare_libvirt  # noqa: E402  (bench/harness/)

from hosts.models import Domain, Hypervisor  # noqa: E402
from hosts.sync.fleet import fleet_sync  # noqa: E402
from hosts.testnode import node_uri, write_node  # noqa: E402
from hosts.uris import node_file_dir  # noqa: E402


def bare_fleet(uris: list[str], workers: int, read_xml: bool) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda uri: bare_libvirt(uri, read_xml), uris))
    return time.perf_counter() - started


def blockmig_fleet(hypervisors: list[Hypervisor], workers: int) -> float:
    started = time.perf_counter()
    results = fleet_sync(hypervisors, workers=workers)
    elapsed = time.perf_counter() - started
    failed = [r.error for r in results.values() if not r.ok]
    assert not failed, failed[:3]
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--domains", type=int, default=100)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="steady-state rounds (best is reported)")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    directory = node_file_dir()
    directory.mkdir(parents=True, exist_ok=True)
    uris = []
    for number in range(args.hosts):
        node = directory / f"fleet-{number:03d}.xml"
        write_node(node, args.domains)
        uris.append(node_uri(node))
    hypervisors = [Hypervisor.objects.create(name=f"fleet-{n:03d}", uri=uri) for n, uri in enumerate(uris)]
    print(f"benchmarking {args.hosts} hosts x {args.domains} domains, {args.workers} threads ...", flush=True)

    bare_first = bare_fleet(uris, args.workers, read_xml=True)
    sync_first = blockmig_fleet(hypervisors, args.workers)
    assert Domain.objects.count() == args.hosts * args.domains
    bare_steady = min(bare_fleet(uris, args.workers, read_xml=False) for _ in range(args.repeat))
    sync_steady = min(blockmig_fleet(hypervisors, args.workers) for _ in range(args.repeat))
    bare_serial = bare_fleet(uris, 1, read_xml=True)

    total = args.hosts * args.domains
    print()
    print("fleet sync, wall time in seconds (ratio = blockmig / bare libvirt, same run, same pool size)")
    print(f"{'':>14} | {'bare':>7} {'blockmig':>8} {'ratio':>6} | {'ms/domain':>9}")
    print(
        f"{'first sync':>14} | {bare_first:7.2f} {sync_first:8.2f} {sync_first / bare_first:6.2f} | {sync_first * 1000 / total:9.3f}"
    )
    print(
        f"{'steady resync':>14} | {bare_steady:7.2f} {sync_steady:8.2f} {sync_steady / bare_steady:6.2f} | "
        f"{sync_steady * 1000 / total:9.3f}"
    )
    print(f"(bare first sync on one thread: {bare_serial:.2f} s; goal: ratio <= 2)")


if __name__ == "__main__":
    main()
