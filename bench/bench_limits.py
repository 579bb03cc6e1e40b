"""Copy limits on the lab: 20 concurrent real migrations under limits, against the same copies
without limits and against bare `virsh blockcopy` at the limits' concurrency, in one run.

    .venv/bin/python bench/bench_limits.py [--count 20] [--data-mib 192] [--host-limit 4]
        [--root-limit 2] [--workers 2] [--db sqlite|postgres]

Setup: a throwaway database (harness.site.Environment), --workers (2) real `manage.py
run_worker` processes, --count (20) BIOS-only lab guests (harness.lab.Lab), each on a
qcow2 holding --data-mib of written data, and two destination roots (dest-a, dest-b; the
guests alternate between them). Auto-pivot is on, so each migration completes by itself
and frees its slot. Every section copies the same guests' disks (each section starts from
where the previous pivoted) with no bandwidth limit, so the copies are bound by the host.

  A. without limits (max_copies 0, roots unlimited): all requested at once.
  B. under limits: --host-limit (4) copies at once on the host and --root-limit (2) into
     each root: --count requested at once, the rest wait in `queued` and start by
     themselves. A poller (every 50 ms) records the most copies holding slots on the host
     and in each root, to show the limits held.
  C. bare `virsh blockcopy --wait --pivot --transient-job` of the same disks, --host-limit
     at a time from a thread pool (the same concurrency B allows), no blockmig at all.

Figures: makespan (first request → last completed), aggregate progress rate (bytes the
mirror jobs covered, their `end`, here each disk's virtual size / makespan), and the workers' CPU (utime+stime from /proc/<pid>/stat of every worker) over the
section, per migration holding a slot and per migration in the system. "Progress rate kept"
is B's rate over A's and over C's. The hand-off (a slot frees → the next queued migration's
copy starts) comes from the audit trail. The bench asserts nothing about time; it fails only
when a section cannot produce figures (or a migration does not complete).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# The lab benches' harness, beside this script (bench/harness/).
from harness.lab import Lab, qcow2_path  # noqa: E402
from harness.machine import URI, MiB, code_version, noise, run  # noqa: E402
from harness.site import Environment, WorkerProcess, workers_cpu  # noqa: E402


def section_app(ctx, label: str, workers: list[WorkerProcess], limited: bool) -> dict:
    """A or B: every guest's disk migrated through blockmig at once; returns the figures."""
    from blockmig.lifecycle import DiskRequest, migration_request
    from blockmig.limits.rules import usage_of
    from blockmig.limits.setting import hypervisor_set_limits
    from blockmig.models import AuditEvent, Migration
    from blockmig.states import TERMINAL_STATES
    from hosts.models import Hypervisor

    host: Hypervisor = ctx["host"]
    roots = ctx["roots"]
    if limited:
        root_limits = {str(r): {"max_copies": ctx["root_limit"], "bandwidth_mib": 0} for r in roots}
        hypervisor_set_limits(
            hypervisor=host,
            user=ctx["admin"],
            max_copies=ctx["host_limit"],
            roots={r: (v["max_copies"], 0) for r, v in root_limits.items()},
        )
    else:
        hypervisor_set_limits(hypervisor=host, user=ctx["admin"], max_copies=0, roots={str(r): (0, 0) for r in roots})
    host.refresh_from_db()

    peak = {"host": 0, **{str(r): 0 for r in roots}}
    stop = threading.Event()

    def watch() -> None:
        from django.db import connection

        try:
            while not stop.wait(0.05):
                usage = usage_of(host)
                peak["host"] = max(peak["host"], len(usage.running))
                for r in roots:
                    peak[str(r)] = max(peak[str(r)], sum(1 for c in usage.running if str(r) in c.roots))
        finally:
            connection.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    ids = []
    cpu0, t0 = workers_cpu(workers), time.monotonic()
    for i, (name, uuid) in enumerate(ctx["guests"]):
        dest = roots[i % 2] / f"{name}-{label}.qcow2"
        ids.append(
            migration_request(user=ctx["operator"], hypervisor=host, domain_uuid=uuid, disks=[DiskRequest("vda", str(dest))]).pk
        )
    deadline = time.monotonic() + 600
    while Migration.objects.filter(pk__in=ids).exclude(state__in=TERMINAL_STATES).exists():
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    makespan = time.monotonic() - t0
    cpu = workers_cpu(workers) - cpu0
    stop.set()
    watcher.join(5)
    rows = list(Migration.objects.filter(pk__in=ids).values("pk", "state", "bytes_total", "failure_reason"))
    final: dict[str, int] = {}
    for r in rows:
        final[r["state"]] = final.get(r["state"], 0) + 1
    copied = sum(r["bytes_total"] for r in rows if r["state"] == "completed")

    # Time holding a slot (copying → completed) summed over the migrations: the average
    # number of migrations a worker drove at once is that over the makespan.
    events = list(
        AuditEvent.objects.filter(migration_id__in=ids, event_type__in=["copying", "ready", "completed", "queued"]).values(
            "migration_id", "event_type", "created_at"
        )
    )
    start = {e["migration_id"]: e["created_at"] for e in events if e["event_type"] == "copying"}
    end = {e["migration_id"]: e["created_at"] for e in events if e["event_type"] == "completed"}
    ready = {e["migration_id"]: e["created_at"] for e in events if e["event_type"] == "ready"}
    slot_seconds = sum((end[m] - start[m]).total_seconds() for m in end if m in start)
    # Where a slot's time goes: the copy (copying → ready) and the pivot with its checks
    # (ready → completed, auto-pivot on).
    copy_times = [(ready[m] - start[m]).total_seconds() for m in ready if m in start]
    finish_times = [(end[m] - ready[m]).total_seconds() for m in end if m in ready]
    queued = {e["migration_id"] for e in events if e["event_type"] == "queued"}
    # Hand-off: from the completion that freed a slot to the queued copy that started next.
    ends = sorted(end.values())
    handoffs = []
    for m in queued:
        if m in start:
            before = [t for t in ends if t <= start[m]]
            if before:
                handoffs.append((start[m] - before[-1]).total_seconds())
    return {
        "label": label,
        "count": len(ids),
        "final": final,
        "failures": [f"#{r['pk']}: {r['failure_reason']}" for r in rows if r["state"] == "failed"],
        "makespan": makespan,
        "copied": copied,
        "rate": copied / makespan if makespan else 0.0,
        "cpu": cpu,
        "avg_active": slot_seconds / makespan if makespan else 0.0,
        "peak": peak,
        "queued": len(queued),
        "handoffs": handoffs,
        "copy_times": copy_times,
        "finish_times": finish_times,
    }


def section_virsh(ctx, concurrency: int) -> dict:
    """C: the same copies with plain virsh, `concurrency` at a time."""

    durations: list[float] = []

    def one(item: tuple[int, tuple[str, str]]) -> int:
        i, (name, _uuid) = item
        dest = ctx["roots"][i % 2] / f"{name}-virsh.qcow2"
        # What the engine's bytes_total counts for the same disk: the mirror job's end, which
        # is the disk's virtual size here.
        info = json.loads(run("qemu-img", "info", "-U", "--output=json", qcow2_path(name)))
        size = int(info["virtual-size"])
        began = time.monotonic()
        run(
            "virsh", "-c", URI, "blockcopy", name, "vda", str(dest), "--wait", "--pivot", "--transient-job", "--shallow",
            "--format", "qcow2",
        )  # fmt: skip
        durations.append(time.monotonic() - began)
        return size

    t0 = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        sizes = list(pool.map(one, enumerate(ctx["guests"])))
    makespan = time.monotonic() - t0
    return {
        "makespan": makespan,
        "copied": sum(sizes),
        "rate": sum(sizes) / makespan,
        "count": len(sizes),
        "median_copy": statistics.median(durations),
    }


def report_app(f: dict, workers: int) -> None:
    final = ", ".join(f"{n} {s}" for s, n in sorted(f["final"].items()))
    cpu_pct = 100 * f["cpu"] / f["makespan"]
    print(
        f"    {f['count']} migrations: {final}; makespan {f['makespan']:.2f} s; {f['copied'] / MiB:.0f} MiB copied, "
        f"aggregate {f['rate'] / MiB:.0f} MiB/s"
    )
    print(
        f"    workers' CPU ({workers} processes): {cpu_pct:.1f} % of a core over the section; "
        f"{f['avg_active']:.2f} migrations held a slot on average → "
        + (f"{cpu_pct / f['avg_active']:.2f} % per migration holding a slot, " if f["avg_active"] else "")
        + f"{cpu_pct / f['count']:.2f} % per migration in the system"
    )
    print(f"    most copies holding slots at once: {f['peak']}; {f['queued']} migrations waited in queued")
    if f["copy_times"] and f["finish_times"]:
        print(
            f"    a slot's time, median: copy (copying → ready) {statistics.median(f['copy_times']):.2f} s, "
            f"pivot and checks (ready → completed) {statistics.median(f['finish_times']):.2f} s"
        )
    if f["handoffs"]:
        print(
            f"    hand-off (a copy completed → the next queued copy started, from the audit): median "
            f"{statistics.median(f['handoffs']) * 1000:.0f} ms, max {max(f['handoffs']) * 1000:.0f} ms over {len(f['handoffs'])}"
        )
    for failure in f["failures"]:
        print(f"      failed {failure}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--data-mib", type=int, default=192)
    parser.add_argument("--host-limit", type=int, default=4)
    parser.add_argument("--root-limit", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()

    print(f"bench_limits on {code_version()}; shared, noisy machine: {noise()}", flush=True)
    env = Environment(args.db)
    from django.contrib.auth.models import Group, User

    from blockmig.lifecycle import hypervisor_set_auto_pivot
    from hosts.lab.services import ensure_libvirtd
    from hosts.models import Hypervisor
    from hosts.roles import setup_roles

    ensure_libvirtd()
    lab = Lab()
    workers: list[WorkerProcess] = []
    figures: dict = {}
    failed = False
    try:
        setup_roles()
        operator = User.objects.create_user("operator")
        operator.groups.add(Group.objects.get(name="operator"))
        operator = User.objects.get(pk=operator.pk)
        admin = User.objects.create_user("admin", is_superuser=True)
        roots = [lab.root / "dest-a", lab.root / "dest-b"]
        for r in roots:
            r.mkdir()
        host = Hypervisor.objects.create(name="bench", uri=URI, allowed_roots=[str(r) for r in roots])
        hypervisor_set_auto_pivot(hypervisor=host, user=admin, enabled=True)
        t = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            guests = list(pool.map(lambda i: lab.domain(f"l{i:02d}", args.data_mib + 32, args.data_mib), range(args.count)))
        print(f"{args.count} guests, {args.data_mib} MiB of data each, built in {time.monotonic() - t:.1f} s", flush=True)
        # Slots enough that the workers never limit section A (the copy limits are the subject).
        for _ in range(args.workers):
            workers.append(WorkerProcess(env.var, args.count))
        for w in workers:
            w.wait_ready()
        ctx = {
            "host": host,
            "admin": admin,
            "operator": operator,
            "guests": guests,
            "roots": roots,
            "host_limit": args.host_limit,
            "root_limit": args.root_limit,
        }
        idle0, t0 = workers_cpu(workers), time.monotonic()
        time.sleep(3)
        idle_pct = 100 * (workers_cpu(workers) - idle0) / (time.monotonic() - t0)
        print(f"workers idle: {idle_pct:.2f} % of a core for {args.workers} processes", flush=True)

        print(f"\n[A] {args.count} at once, no limits", flush=True)
        figures["A"] = section_app(ctx, "a", workers, limited=False)
        report_app(figures["A"], args.workers)
        print(f"\n[B] {args.count} at once under limits: {args.host_limit} on the host, {args.root_limit} per root", flush=True)
        figures["B"] = section_app(ctx, "b", workers, limited=True)
        report_app(figures["B"], args.workers)
        print(f"\n[C] bare virsh blockcopy, {args.host_limit} at a time", flush=True)
        figures["C"] = section_virsh(ctx, args.host_limit)
        c = figures["C"]
        print(
            f"    {c['count']} copies; makespan {c['makespan']:.2f} s; {c['copied'] / MiB:.0f} MiB, {c['rate'] / MiB:.0f} MiB/s; "
            f"one blockcopy --wait --pivot took {c['median_copy']:.2f} s (median)"
        )
        for key in ("A", "B"):
            if figures[key]["final"].get("completed", 0) != args.count:
                failed = True
    except Exception as error:
        import traceback

        traceback.print_exc(limit=5)
        print(f"FAILED: {error!r}")
        failed = True
    finally:
        for w in workers:
            w.stop()
        lab.cleanup()
        env.cleanup()

    if {"A", "B", "C"} <= set(figures):
        a, b, c = figures["A"], figures["B"], figures["C"]
        held = b["peak"]["host"] <= args.host_limit and all(v <= args.root_limit for k, v in b["peak"].items() if k != "host")
        print("\nSummary (same run, noisy shared machine)")
        print(
            f"  under limits: {b['final'].get('completed', 0)}/{b['count']} completed, limits "
            f"{'held' if held else 'EXCEEDED'} (peak {b['peak']['host']} on the host of {args.host_limit})"
        )
        print(
            f"  progress rate kept: {b['rate'] / MiB:.0f} MiB/s under limits vs {a['rate'] / MiB:.0f} MiB/s without "
            f"= {b['rate'] / a['rate']:.2f}×; vs bare virsh at the same concurrency {c['rate'] / MiB:.0f} MiB/s "
            f"= {b['rate'] / c['rate']:.2f}×"
        )
        cpu_b = 100 * b["cpu"] / b["makespan"]
        print(
            f"  workers' CPU under limits: {cpu_b:.1f} % of a core = "
            + (f"{cpu_b / b['avg_active']:.2f} % per migration holding a slot, " if b["avg_active"] else "")
            + f"{cpu_b / b['count']:.2f} % per migration in the system (without limits: "
            f"{100 * a['cpu'] / a['makespan'] / a['count']:.2f} % per migration)"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
