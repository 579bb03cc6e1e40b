"""Drives one migration from requested to a terminal state against the real block jobs.

A Driver holds the migration's fenced lease (blockmig.leases) and loops: read the row, act
for its state, write the next state through blockmig.lifecycle under the lease. Every step
starts by looking at what libvirt says, so the same code serves a fresh migration, a
takeover after a crash and a reconnection after libvirtd restarted.

Readiness (invariant 1) comes only from the BLOCK_JOB_2 READY event confirmed by
`<mirror ready='yes'>` in the live XML; a driver that cannot have seen the event (a
takeover, or one that reconnected) accepts the live XML alone. Progress (cur/end) never
decides anything.

What stops the *driving* but never the block job: a lost lease (another worker holds the
migration), SIGTERM, a dropped libvirt connection, a database error. The first two end this
driver; the last two are waited out with backoff while QEMU keeps mirroring. Only a reason
that libvirt itself reports (the job is gone, the domain stopped, the destination changed)
fails the migration, and then the guest stays on its source.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from django.conf import settings
from django.db import Error as DatabaseError  # any database failure, InterfaceError included
from django.db import connection

from blockmig import limits
from blockmig.errors import Refused
from blockmig.leases import Lease, LeaseLost, lease_release, lease_renew
from blockmig.lifecycle import (
    StateMoved,
    auto_pivot_policy_setter,
    migration_note,
    migration_record_progress,
    migration_start_or_queue,
    migration_transition,
)
from blockmig.models import Migration, MigrationDisk, Plan
from blockmig.plan_rules import pivot_allowed_by, pivot_wait_reason
from blockmig.preflight import DiskRequest, check_on_host, destination_medium
from blockmig.progress import Sample, add_sample, moving_rate
from blockmig.states import TERMINAL_STATES, State
from blockmig.verification import pivot_problems
from hosts.adapter import (
    BlockJobHost,
    ConnectFailure,
    ConnectionLost,
    DomainGone,
    LibvirtFailure,
    open_block_jobs,
    retarget_definition,
)
from hosts.sync import hypervisor_sync

log = logging.getLogger(__name__)

TICK = 0.5  # seconds between looks at the jobs (progress is read at least once a second)
PROGRESS_WRITE_EVERY = 1.0  # throttle: at most one progress write per second
JOB_GONE_TIMEOUT = 60.0
SHARE_CHECK_EVERY = 1.0  # seconds between looks at a root's bandwidth share
BACKOFF = (0.5, 1, 2, 4, 8)  # seconds between retries after a connection or database error
CONNECT_ATTEMPTS_BEFORE_COPY = 3  # nothing runs on the host yet: after these, fail
ALIVE_STATES = {"running", "paused", "blocked"}
PASSING_STATES = {"shutdown", "nostate"}  # on the way to shut off (or to gone)
SETTLE_LOOKS = 5
NEARLY_FULL = 4 * 2**20  # bytes free under which a failed copy is put down to ENOSPC


class Failed(Exception):
    """A step failed; the message is the reason a person reads."""


class StopDriving(Exception):
    """SIGTERM: hand the migration over, leave its block job running."""


class Queued(Exception):
    """Over a copy limit: the migration waits in queued, and this driver lets it go (a
    worker claims it again once blockmig.limits says it fits)."""


def _reset_database_connection() -> None:
    """After a database error the connection may be broken (PostgreSQL restarted): drop it
    so the next query opens a new one."""
    try:
        connection.close()
    except Exception:
        pass


def _backoff(attempt: int) -> float:
    return BACKOFF[min(attempt, len(BACKOFF) - 1)]


class Driver:
    def __init__(self, lease: Lease, stopping: threading.Event | None = None):
        self.lease = lease
        self.id = lease.migration_id
        self.worker_id = lease.owner
        self.stopping = stopping or threading.Event()
        self.lost = threading.Event()
        self.done = threading.Event()
        self.wakeup = threading.Event()
        self.lock = threading.Lock()
        self.ready_events: dict[str, float] = {}  # target -> wall-clock time of READY
        self.bad_events: dict[str, str] = {}  # target -> failed/canceled
        # A READY event that fired before we listened cannot reach us: then the live XML's
        # <mirror ready='yes'> alone counts (any claim after the first, or a reconnection).
        self.trust_live_ready = lease.epoch > 1
        self.host: BlockJobHost | None = None
        self.failing: str | None = None  # a decided failure not yet recorded (retried after outages)
        self.disconnected_at: float | None = None
        # target → MiB/s given to libvirt: the operator's limit, or the root's share of its
        # total when that is lower (blockmig.limits.bandwidth_for), looked at once a second.
        self.applied_bandwidth: dict[str, int] | None = None
        self.applied_own: int | None = None
        self.share_checked = 0.0
        self.history: tuple[Sample, ...] = ()  # for the rate (blockmig.progress)
        self.last_write = 0.0
        self.max_end = 0
        self.dest_kinds: dict[str, str] = {}  # target -> file/block/network (dest_kind)

    # -- lease ------------------------------------------------------------------------

    def run(self) -> None:
        beat = threading.Thread(target=self._heartbeat, daemon=True, name=f"heartbeat-{self.id}")
        beat.start()
        try:
            if self.lease.is_takeover:
                self._note("takeover", {"previous_worker": self.lease.previous_owner})
            self._drive()
        except LeaseLost as lost:
            self._lease_lost(str(lost))
        finally:
            self.done.set()
            beat.join()
            if not self.lost.is_set():
                try:
                    lease_release(self.lease, hand_over=self.stopping.is_set())
                except DatabaseError:
                    log.warning("migration %s: could not release the lease; it expires by itself", self.id)
                    _reset_database_connection()

    def _lease_lost(self, why: str) -> None:
        if not self.lost.is_set():
            log.warning("migration %s: lease lost (%s); stopping without touching the block job", self.id, why)
        self.lost.set()
        self.wakeup.set()

    def _heartbeat(self) -> None:
        try:
            while not self.done.wait(settings.BLOCKMIG_HEARTBEAT_SECONDS):
                try:
                    if not lease_renew(self.lease):
                        self._lease_lost("another worker claimed the migration")
                        return
                except DatabaseError as error:
                    # The copy goes on; irreversible steps wait until a renewal succeeds.
                    log.warning("migration %s: heartbeat failed (%s); %.1f s of lease left", self.id, error, self.lease.left())
                    _reset_database_connection()
        finally:
            _reset_database_connection()

    def confirm_lease(self, also=None) -> None:
        """Right before anything that cannot be undone: renew, and go ahead only with at
        least half a lease to spare. `also` (a write) is made in the renewal's transaction.
        Waits out database errors; LeaseLost if superseded."""
        attempt = 0
        while True:
            self.check_stop()
            try:
                if not lease_renew(self.lease, also):
                    raise LeaseLost("another worker claimed the migration")
                if self.lease.left() > self.spare:
                    return
                log.warning("migration %s: the lease renewal was slow; confirming again", self.id)
            except DatabaseError as error:
                log.warning("migration %s: cannot confirm the lease (%s); waiting", self.id, error)
                _reset_database_connection()
            self.stopping.wait(_backoff(attempt))
            attempt += 1

    @property
    def spare(self) -> float:
        """Lease an irreversible step needs left before it goes ahead."""
        return settings.BLOCKMIG_LEASE_SECONDS / 2

    def check_stop(self) -> None:
        if self.lost.is_set():
            raise LeaseLost("another worker claimed the migration")
        if self.stopping.is_set():
            raise StopDriving()

    # -- events -----------------------------------------------------------------------

    def on_event(self, target: str, job_type: str, status: str) -> None:
        with self.lock:
            if status == "ready":
                self.ready_events.setdefault(target, time.time())
            elif status in ("failed", "canceled"):
                self.bad_events[target] = status
        self.wakeup.set()

    # -- fenced writes ------------------------------------------------------------------

    def transition(self, to: str, **kwargs) -> Migration:
        return migration_transition(self.id, to, lease=self.lease, **kwargs)

    def _note(self, event_type: str, details: dict | None = None, **fields) -> None:
        migration_note(self.id, event_type, details, lease=self.lease, **fields)

    def disk_update(self, disk: MigrationDisk, **fields) -> None:
        """A disk row written under the lease (the renewal's own fenced transaction)."""
        if not lease_renew(self.lease, also=lambda: MigrationDisk.objects.filter(pk=disk.pk).update(**fields)):
            raise LeaseLost("a disk write was refused: the lease moved on")
        for name, value in fields.items():
            setattr(disk, name, value)

    # -- main loop --------------------------------------------------------------------

    @property
    def on_host(self) -> BlockJobHost:
        """The connection _drive holds open while the steps run (none between attempts)."""
        if self.host is None:
            raise RuntimeError(f"migration {self.id}: a step ran without a connection to its host")
        return self.host

    def load(self) -> Migration:
        return Migration.objects.select_related("hypervisor").get(pk=self.id)

    def _drive(self) -> None:
        attempt = 0
        while True:
            try:
                self.check_stop()
                migration = self.load()
                if migration.state in TERMINAL_STATES:
                    return
                with open_block_jobs(migration.hypervisor.uri, settings.BLOCKMIG_CONNECT_TIMEOUT) as host:
                    self.host = host
                    try:
                        host.watch(migration.domain_uuid, self.on_event)
                    except LibvirtFailure:
                        pass  # the domain is gone; the step below finds out and says so
                    if self.disconnected_at is not None:
                        self._reconnected()
                    attempt = 0
                    self._steps()
                    return
            except StopDriving:
                log.info("migration %s: handing over (worker stopping); the block job runs on", self.id)
                return
            except Queued as queued:
                log.info("migration %s: queued (%s); released until a slot frees", self.id, queued)
                return
            except ConnectFailure as failure:
                self.host = None
                attempt += 1
                if not self._outage(failure, attempt):
                    return
            except DatabaseError as error:
                log.warning("migration %s: database error (%s); the copy goes on, retrying", self.id, error)
                _reset_database_connection()
                attempt += 1
            self.stopping.wait(_backoff(attempt))

    def _outage(self, failure: ConnectFailure, attempt: int) -> bool:
        """A connection that failed or dropped. False when the migration was failed instead
        (nothing had been started on the host and it stays unreachable)."""
        migration = self.load()
        if (
            not isinstance(failure, ConnectionLost)
            and migration.state in (State.REQUESTED, State.PREFLIGHT, State.QUEUED)
            and attempt >= CONNECT_ATTEMPTS_BEFORE_COPY
        ):
            self._fail(migration, f"{migration.hypervisor.name} is unreachable: {failure.message}")
            return False
        if self.disconnected_at is None:
            self.disconnected_at = time.monotonic()
            log.warning(
                "migration %s: libvirt connection lost (%s); reconnecting, the copy goes on in QEMU", self.id, failure.message
            )
            try:
                self._note("libvirt_connection_lost", {"error": failure.message})
            except DatabaseError:
                _reset_database_connection()
        return True

    def _reconnected(self) -> None:
        if self.disconnected_at is None:
            return
        away = time.monotonic() - self.disconnected_at
        self.disconnected_at = None
        self.trust_live_ready = True
        self.applied_bandwidth = None  # apply the recorded limit again, libvirt may have lost it
        log.info("migration %s: libvirt reconnected after %.1f s", self.id, away)
        self._note("libvirt_reconnected", {"seconds_away": round(away, 1)})

    def _steps(self) -> None:
        handlers = {
            State.REQUESTED: self.start,
            State.PREFLIGHT: self.start,
            State.QUEUED: self.start,
            State.COPYING: self.monitor,
            State.READY: self.monitor,
            State.PIVOTING: self.pivot,
            State.ABORTING: self.abort,
        }
        while True:
            self.check_stop()
            migration = self.load()
            if migration.state in TERMINAL_STATES:
                return
            try:
                if self.failing:
                    self._fail(migration, self.failing)
                    continue
                handlers[State(migration.state)](migration)
            except StateMoved:
                continue
            except Failed as failure:
                self.failing = str(failure)
            except (ConnectFailure, DatabaseError, LeaseLost, StopDriving, Queued):
                raise  # waited out (or the end of this driver), never a reason to fail
            except LibvirtFailure as failure:
                self.failing = self.explain(migration, failure)
            except Exception as error:  # the migration must end somewhere a person can see
                log.exception("migration %s: unexpected error", self.id)
                self.failing = f"Unexpected error in the engine: {error!r}"

    def explain(self, migration: Migration, failure: LibvirtFailure) -> str:
        """A libvirt refusal, in terms of what happened to the domain when that is the cause."""
        try:
            gone = self.domain_problem(migration)
        except LibvirtFailure:
            gone = None  # the refusal itself is the best explanation there is
        return gone or f"libvirt refused: {failure}"

    def domain_problem(self, migration: Migration) -> str | None:
        """Why the domain can no longer carry the copy, or None while it runs."""
        try:
            state = self.on_host.domain_state(migration.domain_uuid)
            for _ in range(SETTLE_LOOKS):
                if state not in PASSING_STATES:
                    break
                # libvirt shows "shutdown" while it tears a domain down: look again, so a
                # domain that is being destroyed and undefined is reported as gone.
                time.sleep(0.3)
                state = self.on_host.domain_state(migration.domain_uuid)
        except DomainGone:
            if migration.definition_strategy == "undefine" and migration.saved_definition:
                after = "blockmig defines it again, shut off, from the definition it saved"
            elif migration.saved_definition:
                after = "its saved definition is kept in this migration for an admin to restore"
            else:
                after = "it was transient, so there is no definition to restore"
            return f"The domain {migration.domain_name} no longer exists (destroyed and undefined outside blockmig); {after}."
        if state not in ALIVE_STATES:
            return f"The domain {migration.domain_name} is no longer running (it is {state}); the copy cannot go on."
        return None

    # -- requested / preflight → copying ------------------------------------------------

    def start(self, migration: Migration) -> None:
        if migration.state == State.REQUESTED:
            migration = self.transition(State.PREFLIGHT, expect={State.REQUESTED})
        disks = list(migration.disks.all())
        try:
            plan = check_on_host(
                self.on_host,
                hypervisor=migration.hypervisor,
                domain_uuid=migration.domain_uuid,
                disks=[DiskRequest(d.target, d.destination) for d in disks],
                reuse_destination=migration.reuse_destination,
                synchronous_writes=migration.synchronous_writes,
                allowed_roots=migration.hypervisor.allowed_roots,
                migration_id=migration.pk,
                mode=migration.mode,
                dest_format=migration.dest_format,
            )
        except Refused as refused:
            raise Failed(f"Preflight before the copy refused: {refused.message}") from None
        if not plan.persistent:
            strategy = "none"
        elif migration.force_undefine or settings.BLOCKMIG_FORCE_UNDEFINE or not plan.transient_job:
            strategy = "undefine"
        else:
            strategy = "transient_job"
        saved = self.on_host.inactive_xml(migration.domain_uuid) if plan.persistent else ""
        # Invariant 2: the inactive XML is committed before anything on the host changes,
        # in the transaction that takes the copy slot (or queues the migration).
        admitted = migration_start_or_queue(
            self.id,
            lease=self.lease,
            details={"definition_strategy": strategy, "definition_saved": bool(saved)},
            saved_definition=saved,
            definition_strategy=strategy,
        )
        if isinstance(admitted, limits.Wait):
            raise Queued(admitted.reason)
        migration = admitted
        if strategy == "undefine":
            self.confirm_lease()
            self.on_host.undefine(migration.domain_uuid)
            self._note("undefined", {"reason": "undefine/copy/redefine procedure"}, domain_undefined=True)
        self.start_copies(migration, disks)
        # Open disk and domain pages draw the mirror target now, not at the next periodic sync.
        self.refresh_inventory(migration, started_copy=True)

    def start_copies(self, migration: Migration, disks: list[MigrationDisk]) -> None:
        created = not migration.reuse_destination

        def record_created() -> None:
            # Before the calls: a crash after libvirt made the files must still remove them.
            MigrationDisk.objects.filter(pk__in=[d.pk for d in disks]).update(created_destination=created)

        self.confirm_lease(also=record_created)
        speeds = limits.bandwidth_for(migration, list(migration.disks.all()))
        for disk in disks:
            disk.created_destination = created
            if self.lease.left() < self.spare:  # several disks: the first copies took a while
                self.confirm_lease()
            self.start_copy(migration, disk, speeds.get(disk.target, migration.bandwidth_mib))
        self.applied_bandwidth = {**(self.applied_bandwidth or {}), **{d.target: speeds[d.target] for d in disks}}
        self.applied_own = migration.bandwidth_mib

    def start_copy(self, migration: Migration, disk: MigrationDisk, speed_mib: int) -> None:
        """One blockCopy; the caller (start_copies) has confirmed the lease."""
        self.on_host.block_copy(
            migration.domain_uuid,
            disk.target,
            disk.destination,
            dest_format=migration.dest_format,
            shallow=migration.mode == Migration.Mode.SHALLOW,
            reuse=migration.reuse_destination,
            transient_job=migration.definition_strategy == "transient_job",
            synchronous_writes=migration.synchronous_writes,
            bandwidth_bytes=speed_mib * 2**20,
            granularity=migration.granularity,
            buf_size=migration.buf_size,
            kind=self.dest_kind(disk),
        )
        self.disk_update(disk, job_started=True, dest_identity=self.identity(disk.destination, self.dest_kind(disk)))

    def dest_kind(self, disk: MigrationDisk) -> str:
        """file, block or network, told apart as preflight does (an nbd:// URL, a path the
        host reports as a block device, else a file). Asked once per driver: a device that
        vanishes later still counts as one, so the check before the pivot refuses it."""
        if disk.target not in self.dest_kinds:
            self.dest_kinds[disk.target] = destination_medium(self.on_host, disk.destination)
        return self.dest_kinds[disk.target]

    def identity(self, path: str, kind: str = "file") -> str:
        """Which file or device `path` is now ("" where the host cannot tell). An NBD export
        has no identity a client can ask for: the page says so before the approval."""
        if kind == "network":
            return ""
        if kind == "block":
            device = self.on_host.block_device(path)
            return device.identity if device is not None else ""
        try:
            return self.on_host.file_identity(path)
        except FileNotFoundError:
            return ""

    # -- copying / ready ------------------------------------------------------------------

    def reconcile_jobs(self, migration: Migration) -> None:
        """On entry to monitoring: every disk has our job, or we know why not."""
        problem = self.domain_problem(migration)
        if problem:
            raise Failed(problem)
        if migration.definition_strategy == "undefine" and not migration.domain_undefined:
            if not self.on_host.is_persistent(migration.domain_uuid):
                self._note("undefined", {"reason": "found undefined on takeover"}, domain_undefined=True)
        live = self.on_host.live_disks(migration.domain_uuid)
        started = False
        for disk in migration.disks.all():
            job = self.on_host.job(migration.domain_uuid, disk.target, live)
            if job is None:
                if not disk.job_started and migration.state == State.COPYING:
                    self.start_copies(migration, [disk])  # we died before libvirt accepted it
                    started = True
                    continue
                raise Failed(self.job_vanished(migration, disk))
            if job.mirror_path and job.mirror_path != disk.destination:
                raise Failed(
                    f"{disk.target} now carries a block job to {job.mirror_path} that blockmig did not start; it is left alone."
                )
            if not disk.job_started or not disk.dest_identity:
                # We died between libvirt accepting the copy and saying so.
                self.disk_update(
                    disk,
                    job_started=True,
                    dest_identity=disk.dest_identity or self.identity(disk.destination, self.dest_kind(disk)),
                )
        if started:
            self.refresh_inventory(migration, started_copy=True)

    def job_vanished(self, migration: Migration, disk: MigrationDisk) -> str:
        """Why a disk's copy ended without blockmig asking, as precisely as libvirt lets us say."""
        with self.lock:
            bad = self.bad_events.get(disk.target)
        if bad == "canceled":
            return (
                f"The block copy of {disk.target} was cancelled outside blockmig (for example with "
                f"`virsh blockjob {migration.domain_name} {disk.target} --abort`); the guest stays on {disk.source_path}."
            )
        space = self.on_host.free_space(disk.destination) if self.dest_kind(disk) == "file" else None
        if space is not None and space[0] < NEARLY_FULL:
            free, total = space
            return (
                f"QEMU could not write the copy of {disk.target} to {disk.destination}: No space left on device "
                f"({free // 2**20} MiB free of {total // 2**20} MiB on its filesystem). Free space there or choose "
                f"another destination; the guest stays on {disk.source_path}."
            )
        if bad == "failed":
            return (
                f"libvirt reports that the copy of {disk.target} to {disk.destination} failed: check that the "
                f"destination is writable and has room; the guest stays on {disk.source_path}."
            )
        return (
            f"The block copy of {disk.target} stopped without blockmig asking (cancelled outside blockmig, "
            f"or QEMU ended it); the guest stays on {disk.source_path}."
        )

    def monitor(self, migration: Migration) -> None:
        log.debug("migration %s: monitoring (%s, trust_live_ready=%s)", self.id, migration.state, self.trust_live_ready)
        self.reconcile_jobs(migration)
        state = migration.state
        while True:
            self.wakeup.wait(TICK)
            self.wakeup.clear()
            self.check_stop()
            migration = self.load()
            if migration.state != state:
                return  # approved, aborted, or moved by someone else: dispatch again
            problem = self.domain_problem(migration)
            if problem:
                raise Failed(problem)
            disks = list(migration.disks.all())
            live = self.on_host.live_disks(migration.domain_uuid)
            jobs = {}
            for disk in disks:
                job = self.on_host.job(migration.domain_uuid, disk.target, live)
                with self.lock:
                    bad = self.bad_events.get(disk.target)
                if job is None or bad:
                    if job is None and not bad:
                        # The event that says why usually follows the job's end by milliseconds.
                        self.wakeup.wait(1.0)
                    raise Failed(self.job_vanished(migration, disk))
                jobs[disk.target] = job
            self.apply_bandwidth(migration, disks, jobs)
            ready = {d.target: self.is_ready(d.target, jobs[d.target]) for d in disks}
            # The last figures before ready are always written: the page shows 100 %.
            self.record_progress(migration, disks, jobs, ready, force=all(ready.values()))
            if state == State.COPYING and all(ready.values()):
                self.mark_ready(migration, disks)
                return
            if state == State.READY and not all(ready.values()):
                self.transition(State.COPYING, expect={State.READY}, details={"reason": "a mirror fell out of sync"})
                return
            if state == State.READY and self.pivot_by_plan(migration):
                return

    def apply_bandwidth(self, migration: Migration, disks: list[MigrationDisk], jobs) -> None:
        """An operator's change is recorded on the row, a root's shared total on the host
        (blockmig.limits); the driver applies both: at once for the operator's, within
        SHARE_CHECK_EVERY when copies into the root start or end."""
        now = time.monotonic()
        if (
            self.applied_bandwidth is not None
            and migration.bandwidth_mib == self.applied_own
            and now - self.share_checked < SHARE_CHECK_EVERY
        ):
            return
        self.share_checked = now
        wanted = limits.bandwidth_for(migration, disks)
        if wanted == self.applied_bandwidth:
            self.applied_own = migration.bandwidth_mib
            return
        self.confirm_lease()  # a paused driver must not act on a migration someone else holds
        before = self.applied_bandwidth or {}
        for disk in disks:
            if jobs[disk.target].mirror_path == disk.destination and before.get(disk.target) != wanted[disk.target]:
                self.on_host.set_speed(migration.domain_uuid, disk.target, wanted[disk.target])
        shared = {t: mib for t, mib in wanted.items() if mib != migration.bandwidth_mib}
        if shared and migration.bandwidth_mib == self.applied_own:
            # Not the operator's change (that one is audited already): the root's share moved.
            self._note("bandwidth_shared", {"mib_per_disk": wanted, "own_limit_mib": migration.bandwidth_mib})
        self.applied_bandwidth = wanted
        self.applied_own = migration.bandwidth_mib

    def is_ready(self, target: str, job) -> bool:
        with self.lock:
            event_seen = target in self.ready_events
        return job.ready and (event_seen or self.trust_live_ready)

    def record_progress(self, migration: Migration, disks, jobs, ready, *, force: bool = False) -> None:
        now = time.monotonic()
        cur = sum(j.cur for j in jobs.values())
        end = sum(j.end for j in jobs.values())
        self.history = add_sample(self.history, now, cur)
        grew = self.max_end > 0 and end > self.max_end
        self.max_end = max(self.max_end, end)
        if now - self.last_write < PROGRESS_WRITE_EVERY and not grew and not force:
            return
        totals = {"bytes_done": cur, "bytes_total": end, "rate_bps": moving_rate(self.history), "progress_at": datetime.now(UTC)}
        if grew:
            totals["total_grew"] = True
        try:
            migration_record_progress(
                self.id,
                totals=totals,
                disks={d.pk: {"cur": jobs[d.target].cur, "end": jobs[d.target].end, "ready": ready[d.target]} for d in disks},
                lease=self.lease,
            )
        except DatabaseError as error:
            # Progress is only for people to look at: skip it, keep watching the copy.
            log.warning("migration %s: progress not recorded (%s)", self.id, error)
            _reset_database_connection()
        self.last_write = now

    def mark_ready(self, migration: Migration, disks: list[MigrationDisk]) -> None:
        with self.lock:
            events = {t: datetime.fromtimestamp(at, UTC).isoformat() for t, at in self.ready_events.items()}
        for disk in disks:
            size = self.on_host.file_size(disk.destination) if self.dest_kind(disk) == "file" else None
            self.disk_update(disk, ready=True, dest_size_at_ready=size)
        self.transition(
            State.READY,
            expect={State.COPYING},
            details={"ready_events": events, "confirmed_by": "mirror ready='yes'", "trusted_live_xml": self.trust_live_ready},
            ready_at=datetime.now(UTC),
        )
        hypervisor = migration.hypervisor
        hypervisor.refresh_from_db(fields=["auto_pivot"])
        # A plan's maintenance window holds back even the host's auto-pivot (pivot_by_plan).
        if hypervisor.auto_pivot and not pivot_wait_reason(migration):
            self.transition(
                State.PIVOTING,
                expect={State.READY},
                event_type="auto_pivot",
                details={"policy": "auto_pivot", "policy_set_by": auto_pivot_policy_setter(hypervisor)},
            )

    def pivot_by_plan(self, migration: Migration) -> bool:
        """A ready migration of an evacuation plan pivots once the plan's window is open and
        an approval covers it: the plan's own (when it covers its pivots), one given while
        the window was shut, or the host's auto-pivot policy (blockmig.plan_rules)."""
        if migration.plan_id is None:
            return False
        migration.hypervisor.refresh_from_db(fields=["auto_pivot"])
        allowed = pivot_allowed_by(migration, auto_pivot=migration.hypervisor.auto_pivot)
        if allowed is None:
            return False
        fields = {}
        if allowed["policy"] == "plan_approval":
            fields["approved_by"] = Plan.objects.get(pk=migration.plan_id).approved_by
        self.transition(State.PIVOTING, expect={State.READY}, event_type="plan_pivot", details=allowed, **fields)
        return True

    # -- pivot ------------------------------------------------------------------------------

    def pivot(self, migration: Migration) -> None:
        uuid = migration.domain_uuid
        disks = list(migration.disks.all())
        problem = self.domain_problem(migration)
        if problem:
            raise Failed(problem)
        live = self.on_host.live_disks(uuid)
        todo = [d for d in disks if live[d.target].source != d.destination]
        deadline = time.monotonic() + 60
        for disk in todo:
            while True:
                job = self.on_host.job(uuid, disk.target)
                if job is None:
                    raise Failed(self.job_vanished(migration, disk))
                if job.ready:
                    break
                if time.monotonic() > deadline:
                    raise Failed(f"The mirror of {disk.target} did not become ready again within 60 s of the approval.")
                time.sleep(0.2)
        # Invariant 9: libvirt would pivot onto a file deleted meanwhile (QEMU holds it open).
        for disk in todo:
            self.check_destination_unchanged(disk)
        self.confirm_lease()
        # Every disk is ready before the first pivots, so they switch together.
        pivoted: list[str] = []
        for disk in todo:
            try:
                self.on_host.pivot(uuid, disk.target)
            except ConnectionLost:
                raise  # reconnect and look: the pivot happened or not, the live XML says which
            except LibvirtFailure as failure:
                done = f" ({', '.join(pivoted)} already pivoted)" if pivoted else ""
                raise Failed(f"libvirt refused to pivot {disk.target}{done}: {failure}") from None
            pivoted.append(disk.target)
        self.wait_jobs_gone(uuid, [d.target for d in disks])
        self.finish(self.load())

    def check_destination_unchanged(self, disk: MigrationDisk) -> None:
        kind = self.dest_kind(disk)
        if kind == "network":
            return  # an NBD export has no identity to compare (the page said so before the approval)
        size: int | None
        if kind == "block":
            device = self.on_host.block_device(disk.destination)
            identity, size = (device.identity, None) if device is not None else (None, None)
        else:
            try:
                identity = self.on_host.file_identity(disk.destination)
                size = self.on_host.file_size(disk.destination)
            except FileNotFoundError:
                identity, size = None, None
        changed = None
        if identity is None:
            changed = "it is no longer a block device" if kind == "block" else "it no longer exists"
        elif disk.dest_identity and identity != disk.dest_identity:
            changed = "another device now has its name" if kind == "block" else "another file now has its name"
        elif disk.dest_size_at_ready is not None and size is not None and size < disk.dest_size_at_ready:
            changed = f"it shrank from {disk.dest_size_at_ready} to {size} bytes"
        if changed:
            raise Failed(
                f"The destination {disk.destination} was deleted or replaced after the copy began ({changed}): "
                f"the pivot was refused, the copy aborted and the guest stays on {disk.source_path}."
            )

    def wait_jobs_gone(self, uuid: str, targets: list[str]) -> None:
        deadline = time.monotonic() + JOB_GONE_TIMEOUT
        while any(self.on_host.job(uuid, t) is not None for t in targets):
            if time.monotonic() > deadline:
                raise Failed(f"The block jobs on {', '.join(targets)} did not end within {JOB_GONE_TIMEOUT:g} s.")
            time.sleep(0.1)

    def finish(self, migration: Migration) -> None:
        uuid = migration.domain_uuid
        disks = list(migration.disks.all())
        moves = {d.target: (d.destination, migration.dest_format, self.dest_kind(d)) for d in disks}
        if migration.definition_strategy == "undefine" and not self.on_host.is_persistent(uuid):
            self.confirm_lease()
            self.on_host.define(retarget_definition(migration.saved_definition, moves))
            self._note("definition_restored", {"points_to": {t: move[0] for t, move in moves.items()}}, domain_undefined=False)
        problems = self.verify(migration, disks)
        self._note("verified", {"ok": not problems, "problems": problems})
        if problems:
            raise Failed("Pivoted, but verification found: " + "; ".join(problems))
        self.transition(State.COMPLETED, expect={State.PIVOTING})
        self.refresh_inventory(migration)

    def verify(self, migration: Migration, disks: list[MigrationDisk]) -> list[str]:
        """Invariant 3: live source, persistent definition and chain are what was asked
        (blockmig.verification decides; this asks libvirt)."""
        uuid = migration.domain_uuid
        live = self.on_host.live_disks(uuid)
        persistent = self.on_host.is_persistent(uuid)
        inactive = self.on_host.inactive_disks(uuid) if persistent else {}
        return pivot_problems(migration.mode, disks, live, inactive, persistent, migration.definition_strategy)

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
        if self.domain_problem(migration) is None:
            live = self.on_host.live_disks(migration.domain_uuid)
            for disk in migration.disks.all():
                if disk.target in live and live[disk.target].source != disk.source_path:
                    problems.append(f"{disk.target} runs on {live[disk.target].source}, not {disk.source_path}")
        if problems:
            raise Failed("Abort left the domain changed: " + "; ".join(problems))
        self.transition(State.ABORTED, expect={State.ABORTING}, details=details)

    def undo(self, migration: Migration) -> dict:
        """Cancel our jobs on disks that have not pivoted, remove destinations we created
        that nothing uses, and put the persistent definition back. Returns what it did, for
        the audit. Idempotent: after an outage it is simply run again."""
        uuid = migration.domain_uuid
        disks = list(migration.disks.all())
        try:
            running = self.on_host.domain_state(uuid) in ALIVE_STATES
            exists = True
        except DomainGone:
            running = exists = False
        live = self.on_host.live_disks(uuid) if running else None
        pivoted = {d.target for d in disks if live and d.target in live and live[d.target].source == d.destination}
        cancelled, removed, kept = [], [], []
        if running:
            for disk in disks:
                if disk.target in pivoted:
                    continue
                job = self.on_host.job(uuid, disk.target, live)
                if job is not None and job.mirror_path in ("", disk.destination):
                    self.confirm_lease()
                    self.on_host.cancel_job(uuid, disk.target)
                    cancelled.append(disk.target)
            self.wait_jobs_gone(uuid, cancelled)
        for disk in disks:
            if not disk.created_destination or disk.target in pivoted or not self.on_host.path_exists(disk.destination):
                continue
            if disk.dest_identity and self.identity(disk.destination) != disk.dest_identity:
                kept.append(f"{disk.destination} (not the file blockmig created: another file now has its name)")
                continue
            # Invariant 10: only once libvirt, connected now, says nothing uses the file.
            users = self.on_host.users_of(disk.destination)
            if users:
                kept.append(f"{disk.destination} (used by {', '.join(users)})")
                continue
            self.confirm_lease()
            self.on_host.remove_file(disk.destination)
            removed.append(disk.destination)
        restored = self.restore_definition(migration, exists, pivoted)
        details = {"cancelled": cancelled, "removed": removed, "definition_restored": restored}
        if kept:
            details["kept"] = kept
        return details

    def restore_definition(self, migration: Migration, exists: bool, pivoted: set[str]) -> bool:
        if migration.definition_strategy != "undefine" or not migration.saved_definition:
            return False
        if exists and self.on_host.is_persistent(migration.domain_uuid):
            return False
        moves = {
            d.target: (d.destination, migration.dest_format, self.dest_kind(d))
            for d in migration.disks.all()
            if d.target in pivoted
        }
        self.confirm_lease()
        self.on_host.define(retarget_definition(migration.saved_definition, moves))
        self._note("definition_restored", {"points_to_destination": sorted(moves)}, domain_undefined=False)
        return True

    def _fail(self, migration: Migration, reason: str) -> None:
        """Undo what we started, then record the failure. An outage or a lost lease in the
        middle propagates: the undo is retried after it (self.failing keeps the reason)."""
        self.failing = reason
        if migration.state in TERMINAL_STATES:
            return
        details = {}
        if migration.state not in (State.REQUESTED, State.PREFLIGHT, State.QUEUED) and self.host is not None:
            try:
                details = self.undo(migration)
            except (ConnectFailure, DatabaseError, LeaseLost, StopDriving):
                raise
            except Exception as error:
                log.exception("migration %s: cleanup after failure", self.id)
                reason += f" Cleanup was incomplete ({error}); check the domain's definition and the destination."
        try:
            self.transition(State.FAILED, details={"reason": reason, **details}, failure_reason=reason)
        except StateMoved:
            pass


def _refresh_inventory(migration_id: int, hypervisor, *, close_connection: bool = False, **options) -> None:
    try:
        hypervisor_sync(hypervisor, **options)
    except Exception:  # the inventory catches up on its next sync anyway
        log.exception("migration %s: inventory refresh failed", migration_id)
    finally:
        if close_connection:
            connection.close()  # this thread's own database connection
