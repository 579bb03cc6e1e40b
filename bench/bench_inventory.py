"""Inventory sync at 1,000 and 10,000 test-driver domains, against bare libvirt in the same run.

    .venv/bin/python bench/bench_inventory.py [--sizes 1000 10000]

(a) bare: the libvirt calls blockmig's sync makes, with nothing done to the answers
    (open, host facts, listAllDomains x3, getAllDomainStats, and XMLDesc per domain for
    a first sync; without the XMLDesc reads for a steady-state resync).
(b) blockmig: hypervisor_sync end to end (libvirt + parsing + database), first sync and
    steady-state resync, with the number of libvirt calls and SQL queries.
(c) the hypervisor detail page (its domain list) rendered for a logged-in superuser:
    time and SQL queries.
Uses a throwaway SQLite database in a temp dir; never touches var/.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from throwaway import throwaway_site  # noqa: E402  (bench/throwaway.py, beside this script)

throwaway_site("blockmig-bench-")

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import NoReverseMatch, reverse  # noqa: E402
from harness.bare_libvirt import bare_libvirt  # noqa: E402  (bench/harness/)

from hosts.models import Hypervisor  # noqa: E402
from hosts.sync.hypervisor import hypervisor_sync  # noqa: E402
from hosts.testnode import node_uri, write_node  # noqa: E402
from hosts.uris import node_file_dir  # noqa: E402


def timed(fn, repeat: int = 1) -> float:
    """Best of `repeat` wall-clock runs, in seconds (the least disturbed by a noisy machine)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def measured_sync(hypervisor: Hypervisor, force: bool = False):
    with CaptureQueriesContext(connection) as queries:
        result = hypervisor_sync(hypervisor, force=force)
    assert result.ok, result.error
    return result, len(queries)


def bench_size(count: int, directory: Path, repeat: int) -> dict:
    node = directory / f"node-{count}.xml"
    write_node(node, count)
    uri = node_uri(node)
    row = {"domains": count}
    row["bare_first"] = timed(lambda: bare_libvirt(uri, read_xml=True), repeat)
    row["bare_steady"] = timed(lambda: bare_libvirt(uri, read_xml=False), repeat)

    hypervisor = Hypervisor.objects.create(name=f"bench-{count}", uri=uri)
    first, row["q_first"] = measured_sync(hypervisor)
    row["sync_first"], row["calls_first"] = first.duration, first.libvirt_calls
    steady_runs = [measured_sync(hypervisor) for _ in range(repeat)]
    row["sync_steady"] = min(result.duration for result, _ in steady_runs)
    row["calls_steady"], row["q_steady"] = steady_runs[0][0].libvirt_calls, steady_runs[0][1]
    forced, row["q_forced"] = measured_sync(hypervisor, force=True)
    row["sync_forced"] = forced.duration
    row["page"] = page_cost(hypervisor, repeat)
    return row


def page_cost(hypervisor: Hypervisor, repeat: int) -> tuple[float, int] | None:
    """(seconds, SQL queries) for the hypervisor detail page, or None if it does not exist yet."""
    try:
        url = reverse("hypervisor_detail", kwargs={"name": hypervisor.name})
    except NoReverseMatch:
        return None
    user = get_user_model().objects.filter(username="bench").first() or get_user_model().objects.create_superuser(
        "bench", "bench@example.org", "bench"
    )
    # A host the throwaway site allows (ALLOWED_HOSTS as in production: the test client's
    # default `testserver` is refused with DisallowedHost).
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    response = client.get(url)  # warm template caches and the session
    if response.status_code != 200:
        return None
    samples = []
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            client.get(url)
            samples.append(time.perf_counter() - started)
    return statistics.median(samples), len(queries)


def print_table(rows: list[dict]) -> None:
    print()
    print("inventory sync (seconds; ratio = blockmig / bare libvirt, same run)")
    print(
        f"{'domains':>8} | {'bare 1st':>8} {'sync 1st':>8} {'ratio':>6} | {'bare ss':>8} {'sync ss':>8} {'ratio':>6} | "
        f"{'forced':>7} | {'calls 1st/ss':>12} | {'SQL 1st/ss/forced':>17} | {'1st ms/dom':>10}"
    )
    for r in rows:
        print(
            f"{r['domains']:>8} | {r['bare_first']:8.3f} {r['sync_first']:8.3f} {r['sync_first'] / r['bare_first']:6.1f} | "
            f"{r['bare_steady']:8.3f} {r['sync_steady']:8.3f} {r['sync_steady'] / r['bare_steady']:6.1f} | "
            f"{r['sync_forced']:7.3f} | {r['calls_first']:>5}/{r['calls_steady']:<6} | "
            f"{r['q_first']:>5}/{r['q_steady']}/{r['q_forced']:<6} | "
            f"{r['sync_first'] * 1000 / r['domains']:10.3f}"
        )
    print("(first-sync goal: 0.5 ms a domain; bare 1st ms/domain is the same run's bare 1st / domains)")
    print()
    print("hypervisor detail page (domain list, logged-in superuser)")
    for r in rows:
        if r["page"] is None:
            print(f"{r['domains']:>8} | page not available yet")
        else:
            seconds, queries = r["page"]
            print(f"{r['domains']:>8} | {seconds * 1000:7.1f} ms | {queries} SQL queries")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    # blockmig connects only to node files under BLOCKMIG_TEST_DRIVER_DIR (hosts.uris).
    directory = node_file_dir()
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    for count in args.sizes:
        print(f"benchmarking {count} domains ...", flush=True)
        rows.append(bench_size(count, directory, args.repeat))
    print_table(rows)


if __name__ == "__main__":
    main()
