"""Drives one migration from requested to a terminal state against the real block jobs.

A Driver holds the migration's lease (blockmig.leases) and loops: read the row, act for its
state, write the next state through blockmig.lifecycle. Every step starts by looking at what
libvirt says, so the same code serves a fresh migration and a takeover after a crash.

Readiness (invariant 1) comes only from the BLOCK_JOB_2 READY event confirmed by
`<mirror ready='yes'>` in the live XML; a takeover, which cannot see an event that fired
before it started, accepts the live XML alone. Progress (cur/end) never decides anything.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from django.conf import settings
from django.db import close_old_connections, connection

from blockmig.errors import Refused
from blockmig.leases import lease_claim, lease_release, lease_renew, new_worker_id
from blockmig.lifecycle import (
    StateMoved,
    auto_pivot_policy_setter,
    migration_note,
    migration_record_progress,
    migration_transition,
)
from blockmig.models import Migration, MigrationDisk
from blockmig.preflight import DiskRequest, check_on_host
from blockmig.states import TERMINAL_STATES, State
from hosts.adapter import BlockJobHost, ConnectFailure, LibvirtFailure, open_block_jobs, retarget_definition
from hosts.sync import hypervisor_sync

log = logging.getLogger(__name__)

TICK = 0.5  # seconds between looks at the jobs (progress is read at least once a second)
PROGRESS_WRITE_EVERY = 1.0  # throttle: at most one progress write per second
RATE_WINDOW = 5.0  # seconds of history behind the moving-average rate
JOB_GONE_TIMEOUT = 60.0


class Failed(Exception):
    """A step failed; the message is the reason a person reads."""


class Driver:
    def __init__(self, migration_id: int, worker_id: str, stopping: threading.Event | None = None):
        self.id = migration_id
        self.worker_id = worker_id
        self.stopping = stopping or threading.Event()
        self.lost = threading.Event()
        self.done = threading.Event()
        self.wakeup = threading.Event()
        self.lock = threading.Lock()
        self.ready_events: dict[str, float] = {}  # target -> wall-clock time of READY
        self.bad_events: dict[str, str] = {}  # target -> failed/canceled
        self.takeover = False
        self.host: BlockJobHost | None = None
        self.history: deque[tuple[float, int]] = deque()
        self.last_write = 0.0
        self.max_end = 0

    # -- lease ------------------------------------------------------------------------

    def run(self) -> str:
        claim = lease_claim(self.id, self.worker_id)
        if claim is None:
            return "another worker got there first"
        self.takeover = claim.is_takeover
        beat = threading.Thread(target=self._heartbeat, daemon=True, name=f"heartbeat-{self.id}")
        beat.start()
        try:
            if self.takeover:
                migration_note(self.id, "takeover", {"previous_worker": claim.previous_owner, "worker": self.worker_id})
            self._drive()
            return Migration.objects.values_list("state", flat=True).get(pk=self.id)
        finally:
            self.done.set()
            beat.join()
            if not self.lost.is_set():
                lease_release(self.id, self.worker_id, hand_over=self.stopping.is_set())
            connection.close()

    def _heartbeat(self) -> None:
        try:
            while not self.done.wait(settings.BLOCKMIG_HEARTBEAT_SECONDS):
                if not lease_renew(self.id, self.worker_id):
                    log.warning("migration %s: lease lost, another worker took over", self.id)
                    self.lost.set()
                    self.wakeup.set()
                    return
        finally:
            connection.close()

    def should_stop(self) -> bool:
        return self.stopping.is_set() or self.lost.is_set()

    # -- events -----------------------------------------------------------------------

    def on_event(self, target: str, job_type: str, status: str) -> None:
        with self.lock:
            if status == "ready":
                self.ready_events.setdefault(target, time.time())
            elif status in ("failed", "canceled"):
                self.bad_events[target] = status
        self.wakeup.set()

    # -- main loop --------------------------------------------------------------------

    def load(self) -> Migration:
        return Migration.objects.select_related("hypervisor").get(pk=self.id)

    def _drive(self) -> None:
        migration = self.load()
        while not self.should_stop():
            try:
                with open_block_jobs(migration.hypervisor.uri, settings.BLOCKMIG_CONNECT_TIMEOUT) as host:
                    self.host = host
                    try:
                        host.watch(migration.domain_uuid, self.on_event)
                    except LibvirtFailure:
                        pass  # the domain is gone; the step below finds out and says so
                    self._steps()
                    return
            except ConnectFailure as failure:
                migration = self.load()
                if migration.state in (State.REQUESTED, State.PREFLIGHT):
                    self._fail(migration, f"{migration.hypervisor.name} is unreachable: {failure.message}")
                    return
                # A copy already runs inside QEMU and does not need us: keep the lease and retry.
                log.warning("migration %s: %s; retrying", self.id, failure.message)
                self.wakeup.wait(5)
                self.wakeup.clear()

    def _steps(self) -> None:
        handlers = {
            State.REQUESTED: self.start,
            State.PREFLIGHT: self.start,
            State.COPYING: self.monitor,
            State.READY: self.monitor,
            State.PIVOTING: self.pivot,
            State.ABORTING: self.abort,
        }
        while not self.should_stop():
            migration = self.load()
            if migration.state in TERMINAL_STATES:
                return
            try:
                handlers[State(migration.state)](migration)
            except StateMoved:
                continue
            except Failed as failure:
                self._fail(self.load(), str(failure))
            except LibvirtFailure as failure:
                self._fail(self.load(), f"libvirt refused: {failure}")
            except Exception as error:  # the migration must end somewhere a person can see
                log.exception("migration %s: unexpected error", self.id)
                self._fail(self.load(), f"Unexpected error in the engine: {error!r}")

    # -- requested / preflight → copying ------------------------------------------------

    def start(self, migration: Migration) -> None:
        if migration.state == State.REQUESTED:
            migration = migration_transition(self.id, State.PREFLIGHT, expect={State.REQUESTED}, details={"worker": self.worker_id})
        disks = list(migration.disks.all())
        try:
            plan = check_on_host(
                self.host,
                hypervisor=migration.hypervisor,
                domain_uuid=migration.domain_uuid,
                disks=[DiskRequest(d.target, d.destination) for d in disks],
                reuse_destination=migration.reuse_destination,
                synchronous_writes=migration.synchronous_writes,
                allowed_roots=migration.hypervisor.allowed_roots,
                migration_id=migration.pk,
            )
        except Refused as refused:
            raise Failed(f"Preflight before the copy refused: {refused.message}") from None
        if not plan.persistent:
            strategy = "none"
        elif migration.force_undefine or settings.BLOCKMIG_FORCE_UNDEFINE or not plan.transient_job:
            strategy = "undefine"
        else:
            strategy = "transient_job"
        saved = self.host.inactive_xml(migration.domain_uuid) if plan.persistent else ""
        # Invariant 2: the inactive XML is committed before anything on the host changes.
        migration = migration_transition(
            self.id, State.COPYING, expect={State.PREFLIGHT},
            details={"definition_strategy": strategy, "definition_saved": bool(saved)},
            saved_definition=saved, definition_strategy=strategy,
        )
        if strategy == "undefine":
            self.host.undefine(migration.domain_uuid)
            migration_note(self.id, "undefined", {"reason": "undefine/copy/redefine procedure"}, domain_undefined=True)
        for disk in disks:
            self.start_copy(migration, disk)
        # Open disk and domain pages draw the mirror target now, not at the next periodic sync.
        self.refresh_inventory(migration, started_copy=True)

    def start_copy(self, migration: Migration, disk: MigrationDisk) -> None:
        # Recorded before the call: a crash after libvirt made the file must still remove it.
        MigrationDisk.objects.filter(pk=disk.pk).update(created_destination=not migration.reuse_destination)
        self.host.block_copy(
            migration.domain_uuid,
            disk.target,
            disk.destination,
            dest_format=migration.dest_format,
            shallow=migration.mode == Migration.Mode.SHALLOW,
            reuse=migration.reuse_destination,
            transient_job=migration.definition_strategy == "transient_job",
            synchronous_writes=migration.synchronous_writes,
            bandwidth_bytes=migration.bandwidth_mib * 2**20,
            granularity=migration.granularity,
            buf_size=migration.buf_size,
        )
        MigrationDisk.objects.filter(pk=disk.pk).update(job_started=True)

    # -- copying / ready ------------------------------------------------------------------

    def reconcile_jobs(self, migration: Migration) -> None:
        """On entry to monitoring: every disk has our job, or we know why not."""
        if migration.definition_strategy == "undefine" and not migration.domain_undefined:
            if not self.host.is_persistent(migration.domain_uuid):
                migration_note(self.id, "undefined", {"reason": "found undefined on takeover"}, domain_undefined=True)
        live = self.host.live_disks(migration.domain_uuid)
        started = False
        for disk in migration.disks.all():
            job = self.host.job(migration.domain_uuid, disk.target, live)
            if job is None:
                if not disk.job_started and migration.state == State.COPYING:
                    self.start_copy(migration, disk)  # we died before libvirt accepted it
                    started = True
                    continue
                raise Failed(f"The block copy of {disk.target} is gone (QEMU or someone else ended it); the guest stays on {disk.source_path}.")
            if job.mirror_path and job.mirror_path != disk.destination:
                raise Failed(f"{disk.target} now carries a block job to {job.mirror_path} that blockmig did not start; it is left alone.")
            if not disk.job_started:  # we died between libvirt accepting the copy and saying so
                MigrationDisk.objects.filter(pk=disk.pk).update(job_started=True)
        if started:
            self.refresh_inventory(migration, started_copy=True)

    def monitor(self, migration: Migration) -> None:
        log.debug("migration %s: monitoring (%s, takeover=%s)", self.id, migration.state, self.takeover)
        self.reconcile_jobs(migration)
        state = migration.state
        while not self.should_stop():
            self.wakeup.wait(TICK)
            self.wakeup.clear()
            if self.should_stop():
                return
            migration = self.load()
            if migration.state != state:
                return  # approved, aborted, or moved by someone else: dispatch again
            disks = list(migration.disks.all())
            live = self.host.live_disks(migration.domain_uuid)
            jobs = {}
            for disk in disks:
                with self.lock:
                    bad = self.bad_events.get(disk.target)
                if bad:
                    raise Failed(f"libvirt reports the copy of {disk.target} to {disk.destination} {bad}: check free space and access on the destination.")
                job = self.host.job(migration.domain_uuid, disk.target, live)
                if job is None:
                    raise Failed(f"The block copy of {disk.target} stopped without blockmig asking (domain shut down or job cancelled outside blockmig).")
                jobs[disk.target] = job
            ready = {d.target: self.is_ready(d.target, jobs[d.target]) for d in disks}
            log.debug("migration %s: jobs %s ready %s", self.id, jobs, ready)
            self.record_progress(migration, disks, jobs, ready)
            if state == State.COPYING and all(ready.values()):
                self.mark_ready(migration)
                return
            if state == State.READY and not all(ready.values()):
                migration_transition(self.id, State.COPYING, expect={State.READY}, details={"reason": "a mirror fell out of sync"})
                return

    def is_ready(self, target: str, job) -> bool:
        with self.lock:
            event_seen = target in self.ready_events
        return job.ready and (event_seen or self.takeover)

    def record_progress(self, migration: Migration, disks, jobs, ready) -> None:
        now = time.monotonic()
        cur = sum(j.cur for j in jobs.values())
        end = sum(j.end for j in jobs.values())
        self.history.append((now, cur))
        while self.history and now - self.history[0][0] > RATE_WINDOW:
            self.history.popleft()
        grew = self.max_end > 0 and end > self.max_end
        self.max_end = max(self.max_end, end)
        if now - self.last_write < PROGRESS_WRITE_EVERY and not grew:
            return
        first_t, first_cur = self.history[0]
        rate = (cur - first_cur) / (now - first_t) if now > first_t else 0.0
        totals = {"bytes_done": cur, "bytes_total": end, "rate_bps": max(rate, 0.0), "progress_at": datetime.now(UTC)}
        if grew:
            totals["total_grew"] = True
        migration_record_progress(
            self.id,
            totals=totals,
            disks={d.pk: {"cur": jobs[d.target].cur, "end": jobs[d.target].end, "ready": ready[d.target]} for d in disks},
        )
        self.last_write = now

    def mark_ready(self, migration: Migration) -> None:
        with self.lock:
            events = {t: datetime.fromtimestamp(at, UTC).isoformat() for t, at in self.ready_events.items()}
        migration_transition(
            self.id, State.READY, expect={State.COPYING},
            details={"ready_events": events, "confirmed_by": "mirror ready='yes'", "takeover": self.takeover},
            ready_at=datetime.now(UTC),
        )
        MigrationDisk.objects.filter(migration_id=self.id).update(ready=True)
        hypervisor = migration.hypervisor
        hypervisor.refresh_from_db(fields=["auto_pivot"])
        if hypervisor.auto_pivot:
            migration_transition(
                self.id, State.PIVOTING, expect={State.READY}, event_type="auto_pivot",
                details={"policy": "auto_pivot", "policy_set_by": auto_pivot_policy_setter(hypervisor)},
            )

    # -- pivot ------------------------------------------------------------------------------

    def pivot(self, migration: Migration) -> None:
        uuid = migration.domain_uuid
        disks = list(migration.disks.all())
        live = self.host.live_disks(uuid)
        todo = [d for d in disks if live[d.target].source != d.destination]
        deadline = time.monotonic() + 60
        for disk in todo:
            while True:
                job = self.host.job(uuid, disk.target)
                if job is None:
                    raise Failed(f"The block copy of {disk.target} ended before the pivot; the guest stays on {disk.source_path}.")
                if job.ready:
                    break
                if time.monotonic() > deadline:
                    raise Failed(f"The mirror of {disk.target} did not become ready again within 60 s of the approval.")
                time.sleep(0.2)
        # Every disk is ready before the first pivots, so they switch together.
        pivoted = []
        for disk in todo:
            try:
                self.host.pivot(uuid, disk.target)
            except LibvirtFailure as failure:
                done = f" ({', '.join(pivoted)} already pivoted)" if pivoted else ""
                raise Failed(f"libvirt refused to pivot {disk.target}{done}: {failure}") from None
            pivoted.append(disk.target)
        self.wait_jobs_gone(uuid, [d.target for d in disks])
        self.finish(self.load())

    def wait_jobs_gone(self, uuid: str, targets: list[str]) -> None:
        deadline = time.monotonic() + JOB_GONE_TIMEOUT
        while any(self.host.job(uuid, t) is not None for t in targets):
            if time.monotonic() > deadline:
                raise Failed(f"The block jobs on {', '.join(targets)} did not end within {JOB_GONE_TIMEOUT:g} s.")
            time.sleep(0.1)

    def finish(self, migration: Migration) -> None:
        uuid = migration.domain_uuid
        disks = list(migration.disks.all())
        moves = {d.target: (d.destination, migration.dest_format) for d in disks}
        if migration.definition_strategy == "undefine" and not self.host.is_persistent(uuid):
            self.host.define(retarget_definition(migration.saved_definition, moves))
            migration_note(self.id, "definition_restored", {"points_to": {t: p for t, (p, _f) in moves.items()}}, domain_undefined=False)
        problems = self.verify(migration, disks)
        migration_note(self.id, "verified", {"ok": not problems, "problems": problems})
        if problems:
            raise Failed("Pivoted, but verification found: " + "; ".join(problems))
        migration_transition(self.id, State.COMPLETED, expect={State.PIVOTING})
        self.refresh_inventory(migration)

    def verify(self, migration: Migration, disks: list[MigrationDisk]) -> list[str]:
        """Invariant 3: live source, persistent definition and chain are what was asked."""
        uuid = migration.domain_uuid
        problems = []
        live = self.host.live_disks(uuid)
        for disk in disks:
            record = live.get(disk.target)
            if record is None or record.source != disk.destination:
                problems.append(f"live {disk.target} is {record.source if record else 'missing'}, not {disk.destination}")
                continue
            expected = [disk.destination] + (disk.source_chain[1:] if migration.mode == Migration.Mode.SHALLOW else [])
            actual = [layer.path for layer in record.chain]
            if actual != expected:
                problems.append(f"{disk.target} chain is {' ← '.join(actual)}, expected {' ← '.join(expected)}")
        if self.host.is_persistent(uuid):
            inactive = self.host.inactive_disks(uuid)
            for disk in disks:
                source = inactive[disk.target].source if disk.target in inactive else "missing"
                if source != disk.destination:
                    problems.append(f"the persistent definition's {disk.target} is {source}, not {disk.destination}")
        elif migration.definition_strategy != "none":
            problems.append("the domain is no longer persistent")
        return problems

    def refresh_inventory(self, migration: Migration, *, started_copy: bool = False) -> None:
        """Store what libvirt now says about the host; the sync publishes inventory_changed
        on commit, so open disk and domain pages redraw their chain pictures.

        After the copies started (`started_copy`) only this domain's XML is read again (the
        mirror targets), and on a thread of its own: READY can come milliseconds after the
        copy starts while a sync of a busy host took 1.8 s once, and monitoring (READY,
        progress) must not wait for a picture. After the pivot, a forced sync of the host.
        """
        if started_copy:
            threading.Thread(
                target=_refresh_inventory,
                args=(self.id, migration.hypervisor),
                kwargs={"reread": [migration.domain_uuid], "close_connection": True},
                name=f"inventory-refresh-{self.id}",
                daemon=True,
            ).start()
        else:
            _refresh_inventory(self.id, migration.hypervisor, force=True)

    # -- abort / fail ---------------------------------------------------------------------

    def abort(self, migration: Migration) -> None:
        details = self.undo(migration)
        problems = []
        live = self.host.live_disks(migration.domain_uuid)
        for disk in migration.disks.all():
            if disk.target in live and live[disk.target].source != disk.source_path:
                problems.append(f"{disk.target} runs on {live[disk.target].source}, not {disk.source_path}")
        if problems:
            raise Failed("Abort left the domain changed: " + "; ".join(problems))
        migration_transition(self.id, State.ABORTED, expect={State.ABORTING}, details=details)

    def undo(self, migration: Migration) -> dict:
        """Cancel our jobs on disks that have not pivoted, remove destinations we created,
        and put the persistent definition back. Returns what it did, for the audit."""
        uuid = migration.domain_uuid
        disks = list(migration.disks.all())
        try:
            live = self.host.live_disks(uuid)
        except LibvirtFailure:
            live = None  # the domain is gone (QEMU died and it was transient)
        pivoted = {d.target for d in disks if live and d.target in live and live[d.target].source == d.destination}
        cancelled, removed = [], []
        if live is not None:
            for disk in disks:
                if disk.target in pivoted:
                    continue
                job = self.host.job(uuid, disk.target, live)
                if job is not None and job.mirror_path in ("", disk.destination):
                    self.host.cancel_job(uuid, disk.target)
                    cancelled.append(disk.target)
            self.wait_jobs_gone(uuid, cancelled)
        for disk in disks:
            if disk.created_destination and disk.target not in pivoted:
                self.host.remove_file(disk.destination)
                removed.append(disk.destination)
        restored = self.restore_definition(migration, live, pivoted)
        return {"cancelled": cancelled, "removed": removed, "definition_restored": restored}

    def restore_definition(self, migration: Migration, live, pivoted: set[str]) -> bool:
        if migration.definition_strategy != "undefine" or not migration.saved_definition:
            return False
        if live is not None and self.host.is_persistent(migration.domain_uuid):
            return False
        moves = {d.target: (d.destination, migration.dest_format) for d in migration.disks.all() if d.target in pivoted}
        self.host.define(retarget_definition(migration.saved_definition, moves))
        migration_note(self.id, "definition_restored", {"points_to_destination": sorted(moves)}, domain_undefined=False)
        return True

    def _fail(self, migration: Migration, reason: str) -> None:
        if migration.state in TERMINAL_STATES:
            return
        details = {}
        if migration.state not in (State.REQUESTED, State.PREFLIGHT) and self.host is not None:
            try:
                details = self.undo(migration)
            except Exception as error:
                log.exception("migration %s: cleanup after failure", self.id)
                reason += f" Cleanup was incomplete ({error}); check the domain's definition and the destination."
        try:
            migration_transition(self.id, State.FAILED, details={"reason": reason, **details}, failure_reason=reason)
        except StateMoved:
            pass


# -- running drivers ------------------------------------------------------------------------

class DrivePool:
    """A bounded pool of drivers in one worker process. A migration is mostly waiting on
    libvirt (and on a human, before the pivot), so one process drives several at once."""

    def __init__(self, slots: int, worker_id: str):
        self.slots = slots
        self.worker_id = worker_id
        self.stopping = threading.Event()
        self.executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="drive")
        self.lock = threading.Lock()
        self.running: set[int] = set()

    def has_room(self) -> bool:
        with self.lock:
            return len(self.running) < self.slots

    def submit(self, migration_id: int) -> str:
        with self.lock:
            if migration_id in self.running:
                return "already driven by this worker"
            self.running.add(migration_id)
        self.executor.submit(self._run, migration_id)
        return "dispatched"

    def _run(self, migration_id: int) -> None:
        try:
            close_old_connections()
            Driver(migration_id, self.worker_id, self.stopping).run()
        except Exception:
            log.exception("migration %s: driver crashed", migration_id)
        finally:
            with self.lock:
                self.running.discard(migration_id)
            connection.close()

    def drain(self, timeout: float) -> None:
        """SIGTERM: drivers hand their leases over at their next tick; wait for them."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if not self.running:
                    break
            time.sleep(0.1)
        self.executor.shutdown(wait=False, cancel_futures=True)


_pool: DrivePool | None = None


def install_pool(pool: DrivePool | None) -> None:
    global _pool
    _pool = pool


def migration_drive(migration_id: int) -> str:
    """Entry point of the drive_migration task: hand the migration to this process's pool
    (run_worker), or drive it here and now when there is none (a plain db_worker)."""
    if _pool is not None:
        return _pool.submit(migration_id)
    return Driver(migration_id, new_worker_id()).run()


def _refresh_inventory(migration_id: int, hypervisor, *, close_connection: bool = False, **options) -> None:
    try:
        hypervisor_sync(hypervisor, **options)
    except Exception:  # the inventory catches up on its next sync anyway
        log.exception("migration %s: inventory refresh failed", migration_id)
    finally:
        if close_connection:
            connection.close()  # this thread's own database connection
