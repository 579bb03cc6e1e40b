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
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

URI = "qemu:///system"
PG_SERVER = "postgres://postgres@127.0.0.1:5439"
MiB = 2**20
CLK_TCK = os.sysconf("SC_CLK_TCK")
ANOMALIES: list[str] = []  # engine behaviour worth a look, printed at the end


# -- environment ------------------------------------------------------------------------------


class Environment:
    """A throwaway database and var dir, shared by the bench process and its workers."""

    def __init__(self, db: str):
        self.db = db
        self.var = Path(tempfile.mkdtemp(prefix="blockmig-bench-engine-"))
        self.pg_name = f"blockmig_bench_{os.getpid()}"
        os.environ["BLOCKMIG_VAR_DIR"] = str(self.var)
        os.environ["BLOCKMIG_CHANNEL_PREFIX"] = f"benchengine{os.getpid()}"
        os.environ["BLOCKMIG_LOG_LEVEL"] = "WARNING"
        os.environ["DJANGO_DEBUG"] = "0"
        # Production settings refuse to start without a key; a throwaway one for the bench,
        # its workers and the bench_migration.py subprocess.
        os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
        if db == "postgres":
            import psycopg

            with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
                admin.execute(f'CREATE DATABASE "{self.pg_name}"')
            os.environ["DATABASE_URL"] = f"{PG_SERVER}/{self.pg_name}"
        else:
            os.environ["DATABASE_URL"] = f"sqlite:///{self.var / 'db.sqlite3'}"
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blockmig.settings")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

    def cleanup(self) -> None:
        from django.db import connections

        connections.close_all()
        if self.db == "postgres":
            try:
                import psycopg

                with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=3) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            except Exception as error:
                print(f"could not drop database {self.pg_name}: {error}")
        shutil.rmtree(self.var, ignore_errors=True)


def run(*args) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def virt_type() -> str:
    verdict = Path("/var/tmp/blockmig-test-virt_type")  # shared by the lab tests
    if verdict.exists() and verdict.read_text().strip() in ("kvm", "qemu"):
        return verdict.read_text().strip()
    return "qemu"  # TCG: the guest only has to hold its disk, not boot


def noise() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    done = subprocess.run(["virsh", "-q", "-c", URI, "list", "--name"], capture_output=True, text=True)
    if done.returncode != 0:
        return f"load average {load} on {os.cpu_count()} cores, libvirtd not answering right now"
    running = len([n for n in done.stdout.split() if n])
    return f"load average {load} on {os.cpu_count()} cores, {running} running domains on the lab host"


def libvirtd_answers() -> bool:
    return subprocess.run(["virsh", "-q", "-c", URI, "version"], capture_output=True).returncode == 0


def wait_for_libvirtd(timeout: float = 90.0) -> None:
    """Other lab tests restart libvirtd (the fault tier): wait until it answers again."""
    deadline = time.monotonic() + timeout
    while not libvirtd_answers():
        if time.monotonic() > deadline:
            raise RuntimeError(f"libvirtd did not answer for {timeout:.0f} s")
        time.sleep(0.5)


class LibvirtdWatch(threading.Thread):
    """Notes every change of libvirtd's pid (another test restarting it) with its time."""

    def __init__(self):
        super().__init__(daemon=True, name="libvirtd-watch")
        self.pid = libvirtd_pid()
        self.changes: list[tuple[float, int | None, int | None]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.2):
            pid = libvirtd_pid()
            if pid != self.pid:
                self.changes.append((time.time(), self.pid, pid))
                self.pid = pid

    def between(self, t0: float, t1: float) -> list:
        return [c for c in self.changes if t0 <= c[0] <= t1]

    def note(self, section: str, t0: float) -> None:
        changes = self.between(t0, time.time())
        if changes:
            line = (
                f"{section}: libvirtd changed pid {len(changes)}× during it (another test restarted it: "
                + ", ".join(f"{a}→{b or 'gone'}" for _t, a, b in changes)
                + "); its figures are disturbed"
            )
            print(f"    NOTE: {line}")
            ANOMALIES.append(line)


def cpu_or_none(pid: int | None) -> float | None:
    try:
        return proc_cpu_seconds(pid) if pid else None
    except (FileNotFoundError, ProcessLookupError):
        return None


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rfind(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def libvirtd_pid() -> int | None:
    done = subprocess.run(["pgrep", "-o", "-x", "libvirtd"], capture_output=True, text=True)
    return int(done.stdout.split()[0]) if done.returncode == 0 and done.stdout.split() else None


def pct(values: list[float], q: float) -> float:
    """Percentile with linear interpolation (q in 0..100)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def ms(value: float | None) -> str:
    return "   n/a" if value is None else f"{value * 1000:7.1f}"


# -- workers ----------------------------------------------------------------------------------


class WorkerProcess:
    """One real `manage.py run_worker` on the bench's database."""

    count = 0

    def __init__(self, var: Path, slots: int):
        WorkerProcess.count += 1
        self.label = f"worker-{WorkerProcess.count}"
        self.log_path = var / f"{self.label}.log"
        env = {**os.environ, "BLOCKMIG_WORKER_SLOTS": str(slots), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker"],
            cwd=ROOT,
            env=env,
            stdout=open(self.log_path, "w"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Up once it logged its slots line; the wake-up subscription follows on a thread."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "migration slots" in self.log_path.read_text(errors="replace"):
                time.sleep(0.5)
                return
            if not self.alive():
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.label} did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def cpu(self) -> float:
        return proc_cpu_seconds(self.pid)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def owner_pid(owner: str) -> int | None:
    """lease_owner is `<host>:<pid>:<random>` (blockmig.leases.new_worker_id)."""
    parts = owner.split(":")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


# -- domains ----------------------------------------------------------------------------------


class Lab:
    """The bench's own domains and files; cleanup() removes every one of them."""

    def __init__(self):
        self.root = Path("/var/tmp") / f"blockmig-bench-engine-{os.getpid()}"
        self.dests = self.root / "dest"
        self.dests.mkdir(parents=True)
        self.names: list[str] = []
        self.virt = virt_type()

    def domain(self, label: str, size_mib: int, data_mib: int) -> tuple[str, str]:
        """A running persistent BIOS-only domain on a qcow2 of size_mib holding data_mib of
        written data (a byte pattern from 1 MiB on: no boot signature for SeaBIOS to run)."""
        from hosts.lab.domains import VirshError, domain_state, virsh
        from tests.lab.engine_helpers import Disk, define_and_start

        name = f"bmtest-{os.getpid()}-bench-eng-{label}"
        directory = self.root / label
        directory.mkdir()
        disk = directory / "vda.qcow2"
        run("qemu-img", "create", "-q", "-f", "qcow2", disk, f"{size_mib}M")
        if data_mib:
            run("qemu-io", "-f", "qcow2", "-c", f"write -q -P 0x5a 1M {data_mib}M", disk)
        self.names.append(name)
        for attempt in range(5):
            try:
                if attempt == 0:
                    define_and_start(name, [Disk("vda", disk)], self.virt, persistent=True)
                else:
                    state = domain_state(name)
                    if state is None:
                        define_and_start(name, [Disk("vda", disk)], self.virt, persistent=True)
                    elif state != "running":
                        virsh("start", name)
                return name, virsh("domuuid", name).stdout.strip()
            except VirshError:
                if libvirtd_answers() and attempt >= 2:
                    raise
                wait_for_libvirtd()
        raise RuntimeError(f"could not start {name}")

    def cleanup(self) -> None:
        from hosts.lab.domains import destroy_and_undefine, virsh

        def one(name: str) -> None:
            try:
                virsh("blockjob", name, "vda", "--abort", check=False)
                destroy_and_undefine(name)
            except Exception as error:
                print(f"cleanup of {name}: {error}")

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, self.names))
        shutil.rmtree(self.root, ignore_errors=True)


class JobPoller:
    """Polls blockJobInfo on one disk from a thread over the bench's own connection."""

    def __init__(self, conn, name: str, target: str = "vda", period: float = 0.001):
        self.dom = conn.lookupByName(name)
        self.target = target
        self.period = period
        self.polls = 0
        self.poll_time = 0.0

    def has_job(self) -> bool:
        return bool(self.dom.blockJobInfo(self.target, 0))

    def watch(self, timeout: float = 30.0):
        """Start polling; returns (armed event, result dict, thread). result['seen'] is the
        perf_counter time of the first poll that saw a job."""
        armed = threading.Event()
        result: dict = {"seen": None}

        def loop():
            deadline = time.perf_counter() + timeout
            first = True
            while time.perf_counter() < deadline:
                before = time.perf_counter()
                info = self.dom.blockJobInfo(self.target, 0)
                after = time.perf_counter()
                self.polls += 1
                self.poll_time += after - before
                if info:
                    if first:
                        result["error"] = "a block job was already there before the clock started"
                    result["seen"] = after
                    result["seen_wall"] = time.time()
                    return
                if first:
                    first = False
                    armed.set()
                time.sleep(self.period)

        thread = threading.Thread(target=loop, daemon=True, name="job-poller")
        thread.start()
        if not armed.wait(5):
            raise RuntimeError(result.get("error") or "the poller did not start")
        return armed, result, thread

    def wait_gone(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.has_job():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the block job on {self.dom.name()}/{self.target} did not end")
            time.sleep(0.01)


# -- app helpers ------------------------------------------------------------------------------


def wait_state(migration_id: int, states: set[str], timeout: float = 60.0, poll: float = 0.01):
    from blockmig.models import Migration

    deadline = time.monotonic() + timeout
    while True:
        row = Migration.objects.values("state", "failure_reason").get(pk=migration_id)
        if row["state"] in states:
            return row["state"]
        if time.monotonic() > deadline:
            raise RuntimeError(f"migration #{migration_id} is {row['state']} ({row['failure_reason']!r}), not {states}")
        time.sleep(poll)


def abort_and_wait(ctx, migration_id: int, poller: JobPoller | None = None, dest: Path | None = None) -> None:
    from blockmig.lifecycle import migration_abort
    from blockmig.models import Migration

    migration = Migration.objects.get(pk=migration_id)
    migration_abort(migration=migration, user=ctx["operator"])
    state = wait_state(migration_id, {"aborted", "failed"})
    if state != "aborted":
        # Not the bench's business to judge, but worth reporting: an abort should abort.
        reason = Migration.objects.get(pk=migration_id).failure_reason
        ANOMALIES.append(f"migration #{migration_id}: abort ended `{state}`: {reason} (audit: {audit_trail(migration_id)})")
    if poller:
        poller.wait_gone()
    if dest is not None and dest.exists():
        ANOMALIES.append(f"migration #{migration_id}: {dest} still there after the abort ended {state}")
        dest.unlink(missing_ok=True)


def audit_trail(migration_id: int) -> str:
    from blockmig.models import AuditEvent

    return ", ".join(f"{e.event_type}→{e.to_state}" for e in AuditEvent.objects.filter(migration_id=migration_id))


# -- 1. request → block job started ---------------------------------------------------------


def bench_start(ctx, lab: Lab, conn, runs: int, poll_period: float = 0.001) -> dict:
    import libvirt

    from blockmig.lifecycle import DiskRequest, migration_request
    from blockmig.models import AuditEvent
    from hosts.adapter import disk_source_xml

    name, uuid = ctx["lat_name"], ctx["lat_uuid"]
    st = {"conn": conn, "polls": 0, "poll_time": 0.0}

    def connect() -> None:
        if st.get("poller"):
            st["polls"] += st["poller"].polls
            st["poll_time"] += st["poller"].poll_time
        st["poller"] = JobPoller(st["conn"], name, period=poll_period)
        st["dom"] = st["conn"].lookupByName(name)

    connect()
    flags = libvirt.VIR_DOMAIN_BLOCK_COPY_SHALLOW | libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB
    counter = [0]

    def dest() -> Path:
        counter[0] += 1
        return lab.dests / f"start-{counter[0]}.qcow2"

    def one_blockmig() -> dict:
        path = dest()
        _armed, result, thread = st["poller"].watch()
        t0_wall = time.time()
        t0 = time.perf_counter()
        migration = migration_request(
            user=ctx["operator"],
            hypervisor=ctx["host"],
            domain_uuid=uuid,
            disks=[DiskRequest("vda", str(path))],
            mode="shallow",
            dest_format="qcow2",
        )
        returned = time.perf_counter()
        thread.join()
        if result.get("error") or result["seen"] is None:
            raise RuntimeError(result.get("error") or f"no block job within 30 s of migration #{migration.pk}")
        events = {e.event_type: e.created_at.timestamp() for e in AuditEvent.objects.filter(migration=migration)}
        abort_and_wait(ctx, migration.pk, st["poller"], path)
        return {
            "seconds": result["seen"] - t0,
            "returned": returned - t0,
            "preflight": events["preflight"] - t0_wall if "preflight" in events else None,
            "copying": events["copying"] - t0_wall if "copying" in events else None,
        }

    def one_libvirt() -> dict:
        path = dest()
        _armed, result, thread = st["poller"].watch()
        t0 = time.perf_counter()
        st["dom"].blockCopy("vda", disk_source_xml(str(path), "qcow2"), {}, flags)
        returned = time.perf_counter()
        thread.join()
        if result["seen"] is None:
            raise RuntimeError("no block job after blockCopy")
        st["dom"].blockJobAbort("vda", 0)
        st["poller"].wait_gone()
        path.unlink(missing_ok=True)
        return {"seconds": result["seen"] - t0, "returned": returned - t0}

    def one_virsh() -> dict:
        path = dest()
        _armed, result, thread = st["poller"].watch()
        t0 = time.perf_counter()
        run("virsh", "-q", "-c", URI, "blockcopy", name, "vda", path, "--shallow", "--transient-job", "--format", "qcow2")
        returned = time.perf_counter()
        thread.join()
        if result["seen"] is None:
            raise RuntimeError("no block job after virsh blockcopy")
        st["dom"].blockJobAbort("vda", 0)
        st["poller"].wait_gone()
        path.unlink(missing_ok=True)
        return {"seconds": result["seen"] - t0, "returned": returned - t0}

    kinds = {"blockmig": one_blockmig, "libvirt": one_libvirt, "virsh": one_virsh}
    watch: LibvirtdWatch = ctx["watch"]
    discarded = []

    def recover(kind: str, error: Exception) -> None:
        """Another test restarted libvirtd (or it stalled): put the disk back as it was and
        discard the run."""
        from django.db import connections

        from blockmig.models import Migration
        from blockmig.states import ACTIVE_STATES
        from hosts.lab.domains import domain_state, virsh

        discarded.append(f"{kind}: {str(error).splitlines()[0][:200]}")
        connections.close_all()  # PostgreSQL restarted by another test: a new connection
        wait_for_libvirtd()
        if domain_state(name) != "running":
            discarded.append(f"{name} was {domain_state(name)}: started again")
            virsh("start", name, check=False)
        try:
            st["conn"].close()
        except libvirt.libvirtError:
            pass
        st["conn"] = libvirt.open(URI)
        connect()
        for pk in Migration.objects.filter(domain_uuid=uuid, state__in=ACTIVE_STATES).values_list("pk", flat=True):
            try:
                abort_and_wait(ctx, pk, st["poller"])
            except Exception as abort_error:  # e.g. still requested: the worker ends it
                wait_state(pk, {"aborted", "failed", "completed"}, timeout=60)
                discarded.append(f"cleanup of #{pk}: {abort_error}")
        virsh("blockjob", name, "vda", "--abort", check=False)
        st["poller"].wait_gone()
        for stray in lab.dests.glob("start-*.qcow2"):
            stray.unlink(missing_ok=True)

    def measured(kind: str) -> dict | None:
        t0 = time.time()
        try:
            row = kinds[kind]()
        except Exception as error:
            # Other tests restart libvirtd and PostgreSQL on this machine; repeat the run
            # after putting things back, but give up when it keeps failing.
            if len(discarded) >= max(10, runs):
                raise
            recover(kind, error)
            return None
        if watch.between(t0 - 0.5, time.time()):
            discarded.append(f"{kind}: libvirtd restarted during the run")
            return None
        return row

    # Warm-up, not counted: first connection, first qcow2 creation in the directory, ...
    for kind in kinds:
        measured(kind)
        time.sleep(0.2)
    rows: dict[str, list[dict]] = {k: [] for k in kinds}
    i = 0
    while min(len(v) for v in rows.values()) < runs:
        order = list(kinds) if i % 2 == 0 else list(reversed(kinds))
        i += 1
        for kind in order:
            if len(rows[kind]) < runs:
                row = measured(kind)
                if row is not None:
                    rows[kind].append(row)
            time.sleep(0.3)  # the worker idle again (driver ended, lease released)
    connect()  # folds the last poller's counters in
    period = st["poll_time"] / st["polls"] if st["polls"] else 0
    if discarded:
        print(f"    NOTE: {len(discarded)} run(s) discarded and repeated: " + "; ".join(discarded[:5]))
    return {"rows": rows, "poll_call": period, "poll_period": poll_period, "conn": st["conn"]}


def report_start(result: dict, runs: int) -> dict:
    rows = result["rows"]
    print(f"\n[1] Request → block job started, {runs} runs each, interleaved (ms)")
    print(
        f"    the bench's poller: blockJobInfo, {result['poll_period'] * 1000:g} ms sleep between calls "
        f"(+{result['poll_call'] * 1000:.2f} ms per call on average)"
    )
    print(f"    {'':44}{'p50':>8}{'p95':>8}{'min':>8}{'max':>8}")
    figures = {}
    for kind, label in (
        ("blockmig", "blockmig: migration_request → job seen"),
        ("libvirt", "baseline: virDomainBlockCopy → job seen"),
        ("virsh", "baseline: virsh blockcopy → job seen"),
    ):
        values = [r["seconds"] for r in rows[kind]]
        figures[kind] = (pct(values, 50), pct(values, 95))
        print(f"    {label:44}{ms(pct(values, 50))}{ms(pct(values, 95))}{ms(min(values))}{ms(max(values))}")
    print("    blockmig breakdown (ms after t0)")
    for key, label in (
        ("returned", "migration_request() returned (preflight)"),
        ("preflight", "worker's `preflight` audit event (claimed)"),
        ("copying", "worker's `copying` audit event"),
        ("seconds", "block job seen by the poller"),
    ):
        values = [r[key] for r in rows["blockmig"] if r.get(key) is not None]
        if values:
            print(f"      {label:42}{ms(pct(values, 50))}{ms(pct(values, 95))}{ms(min(values))}{ms(max(values))}")
    lib_ret = [r["returned"] for r in rows["libvirt"]]
    print(f"      (baseline blockCopy() call itself: p50 {pct(lib_ret, 50) * 1000:.1f} ms)")
    b50, b95 = figures["blockmig"]
    l50, l95 = figures["libvirt"]
    v50, v95 = figures["virsh"]
    print(
        f"    ratio blockmig / libvirt blockCopy: p50 {b50 / l50:.2f}×, p95 {b95 / l95:.2f}×;"
        f" blockmig / virsh: p50 {b50 / v50:.2f}×, p95 {b95 / v95:.2f}×"
    )
    print(f"    goal p95 ≤ 50 ms: {'met' if b95 <= 0.050 else 'NOT met'} (p95 {b95 * 1000:.1f} ms)")
    return {"p50": b50, "p95": b95, "lib_p50": l50, "lib_p95": l95, "virsh_p50": v50, "virsh_p95": v95}


# -- 2. takeover after kill -9 ----------------------------------------------------------------


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


# -- 3. concurrent migrations ---------------------------------------------------------------


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


# -- 4. full copy bench ---------------------------------------------------------------------


def bench_copy() -> dict:
    print("\n[4] bench/bench_migration.py (full copy vs virsh blockcopy, its own worker and database)", flush=True)
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "bench_migration.py")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BLOCKMIG_VAR_DIR", "BLOCKMIG_CHANNEL_PREFIX")},
    )
    ratio = None
    for line in proc.stdout:
        print("    | " + line.rstrip(), flush=True)
        match = re.search(r"ratio blockmig / virsh \(medians\): ([0-9.]+)", line)
        if match:
            ratio = float(match.group(1))
    proc.wait()
    if ratio is not None:
        print(
            f"    full-copy ratio blockmig / virsh blockcopy: {ratio:.3f}× (goal ≤ 1.02: {'met' if ratio <= 1.02 else 'NOT met'})"
        )
    else:
        print(f"    bench_migration.py printed no ratio (exit code {proc.returncode})")
    return {"ratio": ratio, "rc": proc.returncode}


# -- main ---------------------------------------------------------------------------------


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

    code = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"bench_engine on {code or 'unknown code'}; the machine is shared with other lab tests (noisy): {noise()}", flush=True)
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
