"""The job engine on the lab: start latency, takeover after kill -9, 20 concurrent copies.

    .venv/bin/python bench/bench_engine.py [--runs 20] [--takeovers 3] [--concurrent 20]
        [--conc-data-mib 40] [--window 10] [--poll-ms 1] [--db sqlite|postgres]
        [--only start,concurrent,takeover] [--skip-copy-bench]

About 2.5 minutes with the defaults (1 → 3 → 2 run in that order, then 4). Everything runs
against the real lab (libvirtd + QEMU, BIOS-only guests as tests/lab/engine_helpers.py
builds them, named `bmtest-<pid>-bench-eng-…` so the lab tests' stale-domain sweeper
recognises them if the bench is killed) and real `manage.py run_worker` processes on a
throwaway database (a SQLite file in a temp BLOCKMIG_VAR_DIR, or with --db postgres a
database `blockmig_bench_<pid>` in the private cluster on port 5439), with a wake/channel
prefix of its own in the shared Redis. Lease settings are the production defaults unless
BLOCKMIG_LEASE_SECONDS / _HEARTBEAT_SECONDS / _POLL_SECONDS are set in the environment.
Every figure is printed next to a baseline measured in the same run: the machine is shared
with other lab tests (some restart libvirtd or PostgreSQL), so its speed varies from minute
to minute. A libvirtd restart during a section is noted next to its figures.

1. Request → block job started (p50/p95 over --runs). One worker, running and idle. The
   bench polls `blockJobInfo` on the disk over its own libvirt connection (--poll-ms sleep
   between calls, each call ≈1.5–3 ms here) from a thread armed before the clock starts;
   t0 is taken just before `migration_request(...)`. After each run the migration is
   aborted through the app. Baselines, interleaved with the blockmig runs on the same
   domain and disk and seen by the same poller: `virDomainBlockCopy` called by the bench
   itself (the engine's flags: shallow, transient job, qcow2) and `virsh blockcopy` as a
   subprocess. A run that another test's libvirtd/PostgreSQL restart broke is repeated.
2. Takeover after kill -9. A copy limited to 1 MiB/s; right after a progress write the
   worker holding it is killed with SIGKILL; rounds alternate between "standby" (another
   worker already running) and "fresh" (a new worker started right after the kill).
   Measured from the kill to the `takeover` audit event's created_at and to the new owner's
   first progress write (Migration.progress_at). Baseline: the lease length (the floor:
   nobody may take over before it runs out) and the lease actually left at the kill.
3. --concurrent (20) migrations at once, one worker with BLOCKMIG_WORKER_SLOTS ≥ that + 4,
   each domain on a 64 MiB qcow2 holding --conc-data-mib of data, limited to 1 MiB/s so all
   stay copying through the window. The worker's CPU (utime+stime, /proc/<pid>/stat) over
   --window seconds while all copy, against the same worker idle over the same length just
   before; progress writes counted from changes of progress_at (polled every 0.1 s)
   against 1/s per migration. Then the limit is lifted through the app
   (`migration_set_bandwidth(0)`) on a host with auto_pivot on, and all must complete.
4. bench/bench_migration.py run once as a subprocess (full copy vs `virsh blockcopy`,
   goal ≤ 1.02); --skip-copy-bench leaves it out (`make bench` runs it on its own too).

The bench prints figures; it asserts nothing about time (exit code 1 only when a section
could not produce figures). Every domain, file, worker and database it creates is removed
in `finally`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The harness and the measurements live beside this script (bench/harness/, bench/engine/).
from engine.concurrent import bench_concurrent, report_concurrent  # noqa: E402
from engine.full_copy import bench_copy  # noqa: E402
from engine.start import bench_start, report_start  # noqa: E402
from engine.takeover import bench_takeover, report_takeover  # noqa: E402
from harness.figures import ANOMALIES  # noqa: E402
from harness.lab import Lab  # noqa: E402
from harness.machine import URI, LibvirtdWatch, code_version, noise  # noqa: E402
from harness.site import Environment, WorkerProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="request → job started runs (each kind)")
    parser.add_argument("--takeovers", type=int, default=3, help="kill -9 rounds (alternating standby/fresh)")
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--conc-data-mib", type=int, default=40, help="data per concurrent disk (copied at 1 MiB/s)")
    parser.add_argument("--window", type=float, default=10.0, help="CPU / progress window (s)")
    parser.add_argument("--poll-ms", type=float, default=1.0, help="[1] the poller's sleep between blockJobInfo calls")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--only", default="start,concurrent,takeover", help="comma-separated subset")
    parser.add_argument("--skip-copy-bench", action="store_true", help="do not run bench_migration.py")
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("virsh") is None:
        print("bench_engine: needs root and libvirt (make services); skipped")
        return 0
    only = set(args.only.split(","))
    sys.setswitchinterval(0.0005)  # the poller thread must not wait 5 ms for the GIL

    print(f"bench_engine on {code_version()}; the machine is shared with other lab tests (noisy): {noise()}", flush=True)
    env = Environment(args.db)
    import libvirt
    from django.conf import settings
    from django.contrib.auth.models import Group, User

    from hosts.adapter import ensure_event_loop
    from hosts.lab.services import ensure_libvirtd
    from hosts.models import Hypervisor
    from hosts.roles import setup_roles

    ensure_libvirtd()
    ensure_event_loop()
    watch = LibvirtdWatch()
    watch.start()
    slots = max(settings.BLOCKMIG_WORKER_SLOTS, args.concurrent + 4)
    lab = Lab()
    workers: list[WorkerProcess] = []
    conn = None
    figures: dict = {}
    failed: list[str] = []
    started = time.monotonic()
    try:
        setup_roles()
        operator = User.objects.create_user("operator")
        operator.groups.add(Group.objects.get(name="operator"))
        operator = User.objects.get(pk=operator.pk)
        admin = User.objects.create_user("admin", is_superuser=True)
        # No copy limits here: section 3 measures all copies at once (bench_limits.py measures
        # them under the limits).
        host = Hypervisor.objects.create(
            name="bench",
            uri=URI,
            allowed_roots=[str(lab.dests)],
            max_copies=0,
            root_limits={str(lab.dests): {"max_copies": 0, "bandwidth_mib": 0}},
        )
        lat_name, lat_uuid = lab.domain("lat", 64, 48)
        ctx = {
            "operator": operator,
            "admin": admin,
            "host": host,
            "lat_name": lat_name,
            "lat_uuid": lat_uuid,
            "lab": lab,
            "watch": watch,
        }
        conn = libvirt.open(URI)

        workers.append(WorkerProcess(env.var, slots))
        workers[0].wait_ready()
        print(
            f"database: {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}; virt type {lab.virt}; "
            f"lease {settings.BLOCKMIG_LEASE_SECONDS:g} s, heartbeat {settings.BLOCKMIG_HEARTBEAT_SECONDS:g} s, "
            f"poll {settings.BLOCKMIG_POLL_SECONDS:g} s, worker slots {slots}",
            flush=True,
        )

        def section(label: str, fn) -> None:
            t0 = time.time()
            try:
                fn()
            except Exception as error:
                import traceback

                from django.db import connections

                failed.append(label)
                print(f"\n{label}: FAILED, no figures: {error!r}")
                traceback.print_exc(limit=4)
                connections.close_all()
            watch.note(label, t0)
            print(f"    ({noise()})", flush=True)

        def start():
            nonlocal conn
            result = bench_start(ctx, lab, conn, args.runs, args.poll_ms / 1000)
            conn = result["conn"]
            figures["start"] = report_start(result, args.runs)

        def concurrent():
            alive = next(w for w in workers if w.alive())
            figures["concurrent"] = report_concurrent(
                bench_concurrent(ctx, lab, alive, args.concurrent, args.window, args.conc_data_mib), slots
            )

        def takeover():
            figures["takeover"] = report_takeover(bench_takeover(ctx, env, workers, args.takeovers, slots))

        if "start" in only:
            section("[1] request → job started", start)
        if "concurrent" in only:
            section("[3] concurrent migrations", concurrent)
        if "takeover" in only:
            section("[2] takeover after kill -9", takeover)
        for worker in workers:
            if not worker.alive() and worker.proc.returncode not in (-signal.SIGKILL, 0):
                print(f"NOTE: {worker.label} exited with {worker.proc.returncode}:\n{worker.log_tail()}")
    finally:
        watch.stopping.set()
        for worker in workers:
            worker.stop()
        if conn is not None:
            try:
                conn.close()
            except libvirt.libvirtError:
                pass
        lab.cleanup()
        env.cleanup()
    engine_seconds = time.monotonic() - started
    if not args.skip_copy_bench:
        figures["copy"] = bench_copy()

    print(
        f"\nSummary (noisy shared machine: compare each figure with its same-run baseline; "
        f"engine parts took {engine_seconds:.0f} s)"
    )
    if "start" in figures:
        f = figures["start"]
        print(
            f"  request → block job started: p50 {f['p50'] * 1000:.1f} ms, p95 {f['p95'] * 1000:.1f} ms | "
            f"baseline blockCopy p50 {f['lib_p50'] * 1000:.1f} / p95 {f['lib_p95'] * 1000:.1f} ms "
            f"(virsh {f['virsh_p50'] * 1000:.1f} / {f['virsh_p95'] * 1000:.1f} ms) | ratio p50 "
            f"{f['p50'] / f['lib_p50']:.2f}×, p95 {f['p95'] / f['lib_p95']:.2f}× | goal p95 ≤ 50 ms"
        )
    if "takeover" in figures:
        f = figures["takeover"]
        print(
            f"  takeover after kill -9: kill → takeover median {f['takeover_median']:.2f} s (max "
            f"{f['takeover_max']:.2f}), → progress median {f['progress_median']:.2f} s (max {f['progress_max']:.2f}) | "
            f"baseline lease {f['lease']:g} s | ratio {f['takeover_median'] / f['lease']:.2f}× | goal ≤ 10 s"
        )
    if "concurrent" in figures:
        f = figures["concurrent"]
        print(
            f"  {f['count']} concurrent: {f['completed']}/{f['count']} completed; worker CPU {f['busy_pct']:.1f} % "
            f"vs idle {f['idle_pct']:.2f} % = {f['cpu_per_migration']:.2f} % per migration "
            f"({f['cpu_per_migration_net']:.2f} % above idle) | goal ≤ 2 %; progress {f['progress_rate']:.1f}/s vs "
            f"{f['expected_rate']}/s expected ({f['progress_rate'] / f['expected_rate']:.2f}×)"
        )
    if "copy" in figures and figures["copy"]["ratio"] is not None:
        print(f"  full copy vs virsh blockcopy: {figures['copy']['ratio']:.3f}× | goal ≤ 1.02")
    if failed:
        print(f"\nSections that failed (see above): {', '.join(failed)}")
    if ANOMALIES:
        print(f"\nAnomalies seen ({len(ANOMALIES)}):")
        for line in ANOMALIES:
            print(f"  - {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
