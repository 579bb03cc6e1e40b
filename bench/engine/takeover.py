"""[2] Takeover after kill -9: the worker holding a copy limited to 1 MiB/s is killed right
after a progress write; from the kill to the `takeover` audit event and to the new owner's
first progress write, against the lease (see bench_engine.py's docstring)."""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime

from harness.machine import MiB
from harness.site import Environment, WorkerProcess, owner_pid
from harness.waits import abort_and_wait, wait_state


def bench_takeover(ctx, env: Environment, workers: list[WorkerProcess], rounds: int, slots: int) -> dict:
    from django.conf import settings

    from blockmig.lifecycle import DiskRequest, migration_request
    from blockmig.models import AuditEvent, Migration

    uuid = ctx["lat_uuid"]
    path = ctx["lab"].dests / "takeover.qcow2"
    live = [w for w in workers if w.alive()]
    if len(live) < 2:
        workers.append(WorkerProcess(env.var, slots))
        workers[-1].wait_ready()
    migration = migration_request(
        user=ctx["operator"],
        hypervisor=ctx["host"],
        domain_uuid=uuid,
        disks=[DiskRequest("vda", str(path))],
        mode="shallow",
        dest_format="qcow2",
        bandwidth_mib=1,
    )
    mid = migration.pk
    results = []

    def row():
        return Migration.objects.values(
            "state",
            "lease_owner",
            "lease_epoch",
            "lease_expires_at",
            "progress_at",
            "bytes_done",
            "bytes_total",
            "failure_reason",
        ).get(pk=mid)

    def wait_progress_after(after: datetime, owner_not: str | None = None, timeout: float = 40.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = row()
            if r["state"] not in ("copying", "preflight", "requested"):
                raise RuntimeError(f"migration #{mid} is {r['state']} ({r['failure_reason']!r}) during the takeover bench")
            if r["progress_at"] and r["progress_at"] > after and (owner_not is None or r["lease_owner"] != owner_not):
                return r
            time.sleep(0.01)
        raise RuntimeError(f"migration #{mid}: no progress write after {after} within {timeout} s")

    wait_state(mid, {"copying"})
    wait_progress_after(datetime.now(UTC))
    try:
        for i in range(rounds):
            mode = "standby" if i % 2 == 0 else "fresh"
            if mode == "standby" and len([w for w in workers if w.alive()]) < 2:
                workers.append(WorkerProcess(env.var, slots))
                workers[-1].wait_ready()
            # Kill right after a progress write, like a worker that dies while copying.
            before = wait_progress_after(datetime.now(UTC))
            holder = next((w for w in workers if w.alive() and w.pid == owner_pid(before["lease_owner"])), None)
            if holder is None:
                raise RuntimeError(f"no live bench worker holds migration #{mid} (owner {before['lease_owner']})")
            t_kill = time.time()
            lease_left = before["lease_expires_at"].timestamp() - t_kill
            holder.kill9()
            killed_at = datetime.fromtimestamp(t_kill, UTC)
            fresh = None
            if mode == "fresh":
                fresh = WorkerProcess(env.var, slots)
                workers.append(fresh)
            takeover = None
            deadline = time.monotonic() + 40
            while takeover is None and time.monotonic() < deadline:
                takeover = (
                    AuditEvent.objects.filter(migration_id=mid, event_type="takeover", created_at__gt=killed_at)
                    .order_by("created_at")
                    .first()
                )
                if takeover is None:
                    time.sleep(0.01)
            if takeover is None:
                raise RuntimeError(f"no takeover event within 40 s of killing {holder.label}")
            after = wait_progress_after(killed_at, owner_not=before["lease_owner"])
            new_holder = next((w for w in workers if w.alive() and w.pid == owner_pid(after["lease_owner"])), None)
            results.append(
                {
                    "mode": mode,
                    "lease_left": lease_left,
                    "to_takeover": takeover.created_at.timestamp() - t_kill,
                    "to_progress": after["progress_at"].timestamp() - t_kill,
                    "previous_ok": takeover.details.get("previous_worker") == before["lease_owner"],
                    "bytes_before": before["bytes_done"],
                    "bytes_after": after["bytes_done"],
                    "epoch": (before["lease_epoch"], after["lease_epoch"]),
                    "killed": holder.label,
                    "taken_by": new_holder.label if new_holder else after["lease_owner"],
                }
            )
            if fresh is not None:
                fresh.wait_ready()
    finally:
        state = Migration.objects.values_list("state", flat=True).get(pk=mid)
        if state in ("copying", "ready"):
            abort_and_wait(ctx, mid, dest=path)
    return {
        "rounds": results,
        "lease": settings.BLOCKMIG_LEASE_SECONDS,
        "heartbeat": settings.BLOCKMIG_HEARTBEAT_SECONDS,
        "poll": settings.BLOCKMIG_POLL_SECONDS,
    }


def report_takeover(result: dict) -> dict:
    lease = result["lease"]
    print(
        f"\n[2] Takeover after kill -9 of the worker while copying (1 MiB/s), lease {lease:g} s, "
        f"heartbeat {result['heartbeat']:g} s, poll {result['poll']:g} s"
    )
    print(
        f"    {'round':>5} {'mode':8}{'lease left':>11}{'→takeover':>11}{'→progress':>11}  "
        f"{'over floor':>10}  bytes_done before → after, epoch, who"
    )
    for i, r in enumerate(result["rounds"], 1):
        print(
            f"    {i:5} {r['mode']:8}{r['lease_left']:10.2f}s{r['to_takeover']:10.2f}s{r['to_progress']:10.2f}s"
            f"  {r['to_takeover'] - max(r['lease_left'], 0):9.2f}s  {r['bytes_before'] // MiB} → "
            f"{r['bytes_after'] // MiB} MiB, {r['epoch'][0]}→{r['epoch'][1]}, {r['killed']} → {r['taken_by']}"
            + ("" if r["previous_ok"] else "  (takeover event names another previous worker!)")
        )
    takeovers = [r["to_takeover"] for r in result["rounds"]]
    progress = [r["to_progress"] for r in result["rounds"]]
    worst_t, worst_p = max(takeovers), max(progress)
    print(
        f"    kill → takeover event: median {statistics.median(takeovers):.2f} s, max {worst_t:.2f} s;"
        f" kill → next progress write: median {statistics.median(progress):.2f} s, max {worst_p:.2f} s"
    )
    print(
        f"    baseline (floor) = the lease, {lease:g} s: nobody may take over before it runs out; "
        f"ratio takeover / lease: median {statistics.median(takeovers) / lease:.2f}×, max {worst_t / lease:.2f}×"
    )
    print(f"    goal ≤ 10 s: {'met' if worst_p <= 10 else 'NOT met'} (worst kill → progress {worst_p:.2f} s)")
    return {
        "takeover_median": statistics.median(takeovers),
        "takeover_max": worst_t,
        "progress_median": statistics.median(progress),
        "progress_max": worst_p,
        "lease": lease,
    }
