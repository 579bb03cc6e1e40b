"""Full copy of 2 GiB of written data: blockmig request → READY vs `virsh blockcopy --wait`.

    .venv/bin/python bench/bench_migration.py [--size-gib 2] [--repeats 3]

One throwaway domain (a BIOS-only guest, `bmtest-<pid>-bench-full`) on a qcow2 disk holding
2 GiB of written data (byte patterns and pseudo-random blocks), one real
`manage.py run_worker` subprocess on a throwaway SQLite database (BLOCKMIG_VAR_DIR temp dir),
production lease/heartbeat settings. Per repeat, in alternating order:

  (a) blockmig: `migration_request(mode=full, qcow2)` → the row says `ready` (polled every
      10 ms), then aborted through the app (job cancelled, destination removed);
  (b) baseline: `virsh blockcopy <dom> vda <dest> --wait --transient-job --format qcow2`
      (full), then `virsh blockjob --abort` and the destination removed.

Ratio = median(a) / median(b), target ≤ 1.10.

READY delay: libvirt's READY event → the row saying ready. The event time is taken twice:
by the engine (its BLOCK_JOB_2 callback, stored in the `ready` audit event's
details["ready_events"]) and independently by a `virsh event --timestamp` listener started
by the bench; the row's time is `Migration.ready_at` (set in the committing transaction)
and the moment the bench's poll saw it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Beside this script: the throwaway site (bench/throwaway.py) and the lab benches' harness.
from harness.lab import EventListener, job_gone  # noqa: E402
from harness.machine import URI, MiB, run, virt_type  # noqa: E402
from throwaway import throwaway_site  # noqa: E402

POLL = 0.01


def setup_environment() -> Path:
    return throwaway_site(
        "blockmig-bench-migration-",
        env={"BLOCKMIG_CHANNEL_PREFIX": f"bench{os.getpid()}", "BLOCKMIG_LOG_LEVEL": "WARNING", "DJANGO_DEBUG": "0"},
        own_sqlite=True,
        migrate=True,
    )


def build_image(directory: Path, size_gib: int) -> Path:
    """A qcow2 of size_gib + 256 MiB holding size_gib GiB of written data: four kinds of
    blocks in turn (two byte patterns, two pseudo-random 1 MiB blocks repeated)."""
    disk = directory / "vda.qcow2"
    rand = []
    for i in range(2):
        rand.append(directory / f"rand{i}.bin")
        rand[-1].write_bytes(os.urandom(MiB))
    run("qemu-img", "create", "-q", "-f", "qcow2", disk, f"{size_gib * 1024 + 256}M")
    fills = ["-P 0x11", f"-s {rand[0]}", "-P 0x5a", f"-s {rand[1]}"]
    chunk = 256  # MiB
    args = ["qemu-io", "-f", "qcow2"]
    for i in range(size_gib * 1024 // chunk):
        args += ["-c", f"write -q {fills[i % 4]} {i * chunk}M {chunk}M"]
    run(*args, disk)
    return disk


def settle() -> None:
    """Flush dirty pages between runs so one run's writeback does not slow the next."""
    subprocess.run(["sync"], check=False)
    time.sleep(0.5)


def bench_blockmig(ctx, dest: Path, events: EventListener) -> dict:
    from blockmig.lifecycle import DiskRequest, migration_abort, migration_request
    from blockmig.models import AuditEvent, Migration

    t0 = time.time()
    migration = migration_request(
        user=ctx["operator"],
        hypervisor=ctx["host"],
        domain_uuid=ctx["uuid"],
        disks=[DiskRequest("vda", str(dest))],
        mode="full",
        dest_format="qcow2",
    )
    copying_seen = None
    while True:
        state = Migration.objects.values_list("state", flat=True).get(pk=migration.pk)
        if state == "copying" and copying_seen is None:
            copying_seen = time.time()
        if state in ("ready", "failed", "aborted", "completed"):
            break
        time.sleep(POLL)
    seen = time.time()
    migration.refresh_from_db()
    if state != "ready":
        raise RuntimeError(f"migration #{migration.pk} is {state}: {migration.failure_reason}")
    ready_event = AuditEvent.objects.filter(migration=migration, event_type="ready").get()
    engine_event = datetime.fromisoformat(ready_event.details["ready_events"]["vda"]).timestamp()
    copying_event = AuditEvent.objects.filter(migration=migration, event_type="copying").get()
    preflight_event = AuditEvent.objects.filter(migration=migration, event_type="preflight").get()
    ready_at = migration.ready_at.timestamp()

    migration_abort(migration=migration, user=ctx["operator"])
    deadline = time.monotonic() + 60
    while Migration.objects.values_list("state", flat=True).get(pk=migration.pk) not in ("aborted", "failed"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"migration #{migration.pk} did not abort")
        time.sleep(0.05)
    migration.refresh_from_db()
    if migration.state != "aborted":
        raise RuntimeError(f"migration #{migration.pk} abort ended {migration.state}: {migration.failure_reason}")
    job_gone(ctx["name"], poll=0.1)
    if dest.exists():
        raise RuntimeError(f"blockmig left {dest} after the abort")
    libvirt_ready = [t for t in events.ready_times() if t >= t0]
    libvirt_event = min(libvirt_ready) if libvirt_ready else None
    return {
        "seconds": seen - t0,
        "to_ready_at": ready_at - t0,
        "to_preflight": preflight_event.created_at.timestamp() - t0,
        "to_copying": copying_event.created_at.timestamp() - t0,
        "engine_event_to_ready_at": ready_at - engine_event,
        "libvirt_event_to_ready_at": ready_at - libvirt_event if libvirt_event else None,
        "libvirt_event_to_seen": seen - libvirt_event if libvirt_event else None,
        "libvirt_event_to_engine_event": engine_event - libvirt_event if libvirt_event else None,
        "libvirt_event_from_start": libvirt_event - t0 if libvirt_event else None,
        "copy_phase": libvirt_event - copying_event.created_at.timestamp() if libvirt_event else None,
        "overhead": (copying_event.created_at.timestamp() - t0) + (seen - libvirt_event) if libvirt_event else None,
    }


def bench_virsh(ctx, dest: Path) -> dict:
    t0 = time.time()
    run("virsh", "-c", URI, "blockcopy", ctx["name"], "vda", dest, "--wait", "--transient-job", "--format", "qcow2")
    seconds = time.time() - t0
    run("virsh", "-c", URI, "blockjob", ctx["name"], "vda", "--abort")
    job_gone(ctx["name"], poll=0.1)
    dest.unlink(missing_ok=True)
    return {"seconds": seconds}


def fmt(value) -> str:
    return "   n/a" if value is None else f"{value:6.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gib", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0 or shutil.which("virsh") is None:
        print("bench_migration: needs root and libvirt (make services); skipped")
        return 0

    var = setup_environment()
    from django.contrib.auth.models import Group, User

    from hosts.lab.domains import destroy_and_undefine, virsh
    from hosts.lab.services import ensure_libvirtd
    from hosts.models import Hypervisor
    from hosts.roles import setup_roles
    from tests.lab.engine_helpers import Disk, define_and_start

    ensure_libvirtd()
    name = f"bmtest-{os.getpid()}-bench-full"
    directory = Path("/var/tmp") / f"blockmig-bench-migration-{os.getpid()}"
    dests = directory / "dest"
    worker = events = None
    try:
        dests.mkdir(parents=True)
        t = time.monotonic()
        disk = build_image(directory, args.size_gib)
        settle()
        print(f"image: {args.size_gib} GiB written in {time.monotonic() - t:.1f} s ({disk})", flush=True)
        uuid = define_and_start(name, [Disk("vda", disk)], virt_type(), persistent=True)

        setup_roles()
        operator = User.objects.create_user("operator")
        operator.groups.add(Group.objects.get(name="operator"))
        operator = User.objects.get(pk=operator.pk)
        host = Hypervisor.objects.create(name="bench", uri=URI, allowed_roots=[str(dests)])
        ctx = {"operator": operator, "host": host, "uuid": uuid, "name": name}

        env = {**os.environ, "DATABASE_URL": f"sqlite:///{var / 'db.sqlite3'}"}
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker"],
            cwd=ROOT,
            env=env,
            stdout=open(var / "worker.log", "w"),
            stderr=subprocess.STDOUT,
        )
        events = EventListener(name, var / "events.log")
        time.sleep(1.0)  # worker and listener up before the first request
        # Warm-up, not counted: the first copy of a fresh image is slower whichever tool
        # makes it, and would otherwise penalise whichever side runs first.
        t = time.monotonic()
        bench_virsh(ctx, dests / "warmup.qcow2")
        settle()
        print(f"warm-up copy (not counted): {time.monotonic() - t:.2f} s", flush=True)

        rows = []
        for rep in range(args.repeats):
            order = ["blockmig", "virsh"] if rep % 2 == 0 else ["virsh", "blockmig"]
            result = {}
            for kind in order:
                dest = dests / f"{kind}-{rep}.qcow2"
                result[kind] = bench_blockmig(ctx, dest, events) if kind == "blockmig" else bench_virsh(ctx, dest)
                settle()
            rows.append((order, result))
            b, v = result["blockmig"], result["virsh"]
            print(
                f"repeat {rep + 1} ({' then '.join(order)}): blockmig {b['seconds']:.3f} s, virsh {v['seconds']:.3f} s, "
                f"ratio {b['seconds'] / v['seconds']:.3f}",
                flush=True,
            )

        b_times = [r["blockmig"]["seconds"] for _, r in rows]
        v_times = [r["virsh"]["seconds"] for _, r in rows]
        ratio = statistics.median(b_times) / statistics.median(v_times)
        print()
        print(f"Full copy of {args.size_gib} GiB written data, request → READY (s), {args.repeats} repeats, alternating order")
        print(f"{'':34}{'median':>8}{'min':>8}{'max':>8}")
        print(f"{'blockmig (request → row ready)':34}{statistics.median(b_times):8.3f}{min(b_times):8.3f}{max(b_times):8.3f}")
        print(f"{'virsh blockcopy --wait':34}{statistics.median(v_times):8.3f}{min(v_times):8.3f}{max(v_times):8.3f}")
        print(f"ratio blockmig / virsh (medians): {ratio:.3f}  (target ≤ 1.10: {'met' if ratio <= 1.10 else 'NOT met'})")
        print()
        print("READY delay per blockmig run (s)")
        keys = [
            ("to_preflight", "request → worker picked it up"),
            ("to_copying", "request → row copying (job starts)"),
            ("libvirt_event_from_start", "request → libvirt READY event"),
            ("libvirt_event_to_engine_event", "libvirt event → engine callback"),
            ("engine_event_to_ready_at", "engine callback → ready_at"),
            ("libvirt_event_to_ready_at", "libvirt event → ready_at"),
            ("libvirt_event_to_seen", "libvirt event → poll saw ready"),
            ("copy_phase", "QEMU copy (job start → READY)"),
            ("overhead", "blockmig's own time (rest)"),
        ]
        for key, label in keys:
            values = [r["blockmig"][key] for _, r in rows]
            known = [v for v in values if v is not None]
            median = statistics.median(known) if known else None
            print(f"  {label:34}" + " ".join(fmt(v) for v in values) + f"   median {fmt(median)}")
        return 0
    finally:
        if events:
            events.stop()
        if worker and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(5)
        virsh("blockjob", name, "vda", "--abort", check=False)
        destroy_and_undefine(name)
        shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(var, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
