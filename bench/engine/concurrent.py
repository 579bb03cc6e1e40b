"""[3] Concurrent migrations: one worker's CPU and progress writes with --concurrent copies
at 1 MiB/s against the same worker idle, then the limit lifted and all completed by
auto_pivot (see bench_engine.py's docstring)."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from harness.lab import Lab
from harness.machine import cpu_or_none, libvirtd_pid
from harness.site import WorkerProcess
from harness.waits import abort_and_wait


def bench_concurrent(ctx, lab: Lab, worker: WorkerProcess, count: int, window: float, data_mib: int) -> dict:
    from blockmig.lifecycle import DiskRequest, hypervisor_set_auto_pivot, migration_request, migration_set_bandwidth
    from blockmig.models import Migration

    t = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        made = list(pool.map(lambda i: lab.domain(f"c{i:02d}", 64, data_mib), range(count)))
    build = time.monotonic() - t
    hypervisor_set_auto_pivot(hypervisor=ctx["host"], user=ctx["admin"], enabled=True)
    libvirtd = libvirtd_pid()

    # Baseline: the same worker, idle, over the same window length.
    time.sleep(1.0)
    cpu0, lv0, w0 = worker.cpu(), cpu_or_none(libvirtd), time.monotonic()
    time.sleep(window)
    cpu1, lv1, w1 = worker.cpu(), cpu_or_none(libvirtd), time.monotonic()
    idle = {
        "cpu": cpu1 - cpu0,
        "seconds": w1 - w0,
        "libvirtd": (lv1 - lv0) if lv0 is not None and lv1 is not None and libvirtd_pid() == libvirtd else None,
    }

    t_request = time.monotonic()
    ids = []
    try:
        for i, (_name, uuid) in enumerate(made):
            dest = lab.dests / f"c{i:02d}.qcow2"
            ids.append(
                migration_request(
                    user=ctx["operator"],
                    hypervisor=ctx["host"],
                    domain_uuid=uuid,
                    disks=[DiskRequest("vda", str(dest))],
                    mode="shallow",
                    dest_format="qcow2",
                    bandwidth_mib=1,
                ).pk
            )
        requested = time.monotonic() - t_request

        def rows():
            return {
                r["pk"]: r
                for r in Migration.objects.filter(pk__in=ids).values(
                    "pk", "state", "progress_at", "bytes_done", "bytes_total", "failure_reason", "lease_owner"
                )
            }

        # All copying and each with a first progress write before the window opens.
        deadline = time.monotonic() + 60
        while True:
            current = rows()
            bad = [r for r in current.values() if r["state"] in ("failed", "aborted")]
            if bad:
                raise RuntimeError(f"migration #{bad[0]['pk']} {bad[0]['state']}: {bad[0]['failure_reason']}")
            if all(r["state"] == "copying" and r["progress_at"] for r in current.values()):
                break
            if time.monotonic() > deadline:
                states = sorted(r["state"] for r in current.values())
                raise RuntimeError(f"not all {count} migrations copying within 60 s: {states}")
            time.sleep(0.05)
        all_copying = time.monotonic() - t_request
        owners = {r["lease_owner"] for r in current.values()}

        last = {pk: (r["progress_at"], r["bytes_done"]) for pk, r in current.items()}
        changes = {pk: 0 for pk in ids}
        byte_changes = {pk: 0 for pk in ids}
        states_seen: set[str] = set()
        libvirtd = libvirtd_pid()
        cpu0, lv0, w0 = worker.cpu(), cpu_or_none(libvirtd), time.monotonic()
        while time.monotonic() - w0 < window:
            time.sleep(0.1)
            for pk, r in rows().items():
                states_seen.add(r["state"])
                if r["progress_at"] != last[pk][0]:
                    changes[pk] += 1
                if r["bytes_done"] != last[pk][1]:
                    byte_changes[pk] += 1
                last[pk] = (r["progress_at"], r["bytes_done"])
        cpu1, lv1, w1 = worker.cpu(), cpu_or_none(libvirtd), time.monotonic()
        busy = {
            "cpu": cpu1 - cpu0,
            "seconds": w1 - w0,
            "libvirtd": (lv1 - lv0) if lv0 is not None and lv1 is not None and libvirtd_pid() == libvirtd else None,
        }
        done_bytes = {pk: r["bytes_done"] for pk, r in rows().items()}

        # Lift the limit through the app; auto_pivot takes each through the pivot.
        t_lift = time.monotonic()
        for pk in ids:
            migration_set_bandwidth(migration=Migration.objects.get(pk=pk), user=ctx["operator"], bandwidth_mib=0)
        deadline = time.monotonic() + 180
        while True:
            current = rows()
            if all(r["state"] in ("completed", "failed", "aborted") for r in current.values()):
                break
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        finished = time.monotonic() - t_lift
        final = {}
        for r in current.values():
            final[r["state"]] = final.get(r["state"], 0) + 1
        failures = [f"#{r['pk']}: {r['failure_reason']}" for r in current.values() if r["state"] == "failed"]
    finally:
        from blockmig.states import ACTIVE_STATES

        hypervisor_set_auto_pivot(hypervisor=ctx["host"], user=ctx["admin"], enabled=False)
        for pk in Migration.objects.filter(pk__in=ids, state__in=("copying", "ready")).values_list("pk", flat=True):
            try:
                abort_and_wait(ctx, pk)
            except Exception as error:
                print(f"    could not abort #{pk}: {error}")
        left = Migration.objects.filter(pk__in=ids, state__in=ACTIVE_STATES).count()
        if left:
            print(f"    {left} of the concurrent migrations still active after the section")
    return {
        "count": count,
        "build": build,
        "requested": requested,
        "all_copying": all_copying,
        "owners": len(owners),
        "idle": idle,
        "busy": busy,
        "changes": changes,
        "byte_changes": byte_changes,
        "states_seen": states_seen,
        "finished": finished,
        "final": final,
        "failures": failures,
        "bytes_at_window_end": done_bytes,
        "data_mib": data_mib,
    }


def report_concurrent(result: dict, slots: int) -> dict:
    count, idle, busy = result["count"], result["idle"], result["busy"]
    print(
        f"\n[3] {count} concurrent migrations (64 MiB qcow2 each, {result['data_mib']} MiB of data, 1 MiB/s), "
        f"one worker, BLOCKMIG_WORKER_SLOTS={slots}"
    )
    print(
        f"    {count} domains built in {result['build']:.1f} s; {count} requests took {result['requested']:.2f} s; "
        f"all copying with a first progress write {result['all_copying']:.2f} s after the first request "
        f"(held by {result['owners']} worker)"
    )
    idle_pct = 100 * idle["cpu"] / idle["seconds"]
    busy_pct = 100 * busy["cpu"] / busy["seconds"]
    per = busy_pct / count
    per_net = (busy_pct - idle_pct) / count
    print(
        f"    worker CPU, window {busy['seconds']:.1f} s: {busy_pct:.2f} % of a core with {count} copying "
        f"vs idle baseline {idle_pct:.2f} % ({idle['seconds']:.1f} s window); ratio "
        + (f"{busy_pct / idle_pct:.1f}×" if idle_pct > 0 else "n/a (idle 0)")
    )
    print(
        f"    per active migration: {per:.2f} % of a core ({per_net:.2f} % above idle); "
        f"goal ≤ 2 %: {'met' if per <= 2 else 'NOT met'}"
    )
    if busy["libvirtd"] is not None and idle["libvirtd"] is not None:
        print(
            f"    libvirtd CPU (shared with the other lab tests, informational): "
            f"{100 * busy['libvirtd'] / busy['seconds']:.1f} % while copying vs "
            f"{100 * idle['libvirtd'] / idle['seconds']:.1f} % during the idle window"
        )
    writes = sum(result["changes"].values())
    rate = writes / busy["seconds"]
    per_mig = [c / busy["seconds"] for c in result["changes"].values()]
    byte_rate = sum(result["byte_changes"].values()) / busy["seconds"]
    print(
        f"    progress writes (changes of progress_at, polled every 0.1 s): {rate:.1f}/s in all vs {count}/s expected "
        f"(1/s each) = {rate / count:.2f}×; per migration min {min(per_mig):.2f}/s, median "
        f"{statistics.median(per_mig):.2f}/s, max {max(per_mig):.2f}/s"
    )
    print(
        f"    (bytes_done itself changed {byte_rate:.2f}/s: under a speed limit QEMU's mirror copies a whole buffer, "
        f"16 MiB by default, then sleeps, so cur moves in steps)"
    )
    if result["states_seen"] - {"copying"}:
        print(f"    NOTE: states seen during the window besides copying: {sorted(result['states_seen'] - {'copying'})}")
    final = ", ".join(f"{n} {s}" for s, n in sorted(result["final"].items()))
    print(f"    limit lifted (migration_set_bandwidth 0), auto_pivot on: {final} {result['finished']:.1f} s later")
    for failure in result["failures"]:
        print(f"      failed {failure}")
    return {
        "cpu_per_migration": per,
        "cpu_per_migration_net": per_net,
        "idle_pct": idle_pct,
        "busy_pct": busy_pct,
        "progress_rate": rate,
        "expected_rate": count,
        "completed": result["final"].get("completed", 0),
        "count": count,
    }
