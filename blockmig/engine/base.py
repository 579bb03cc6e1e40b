"""The driver's own state, its lease, and the writes it makes under the lease.

Every other part of the engine (blockmig.engine.*) is a layer on DriverBase: the lease is
renewed by a heartbeat thread and confirmed again right before anything irreversible
(`confirm_lease`); every row the driver changes is written fenced by (owner, epoch).
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import Error as DatabaseError  # any database failure, InterfaceError included
from django.db import connection

from blockmig.leases import Lease, LeaseLost, lease_renew
from blockmig.lifecycle import migration_note, migration_transition
from blockmig.models import Migration, MigrationDisk
from blockmig.progress import Sample
from hosts.adapter import BlockJobHost
from hosts.sync.hypervisor import hypervisor_sync

log = logging.getLogger(__name__)

BACKOFF = (0.5, 1, 2, 4, 8)  # seconds between retries after a connection or database error


class Failed(Exception):
    """A step failed; the message is the reason a person reads."""


class StopDriving(Exception):
    """SIGTERM: hand the migration over, leave its block job running."""


class Queued(Exception):
    """Over a copy limit: the migration waits in queued, and this driver lets it go (a
    worker claims it again once blockmig.limits says it fits)."""


def reset_database_connection() -> None:
    """After a database error the connection may be broken (PostgreSQL restarted): drop it
    so the next query opens a new one."""
    try:
        connection.close()
    except Exception:
        pass


def backoff_seconds(attempt: int) -> float:
    return BACKOFF[min(attempt, len(BACKOFF) - 1)]


class DriverBase:
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
        # total when that is lower (blockmig.limits.rules.bandwidth_for), looked at once a second.
        self.applied_bandwidth: dict[str, int] | None = None
        self.applied_own: int | None = None
        self.share_checked = 0.0
        self.history: tuple[Sample, ...] = ()  # for the rate (blockmig.progress)
        self.last_write = 0.0
        self.max_end = 0
        self.dest_kinds: dict[str, str] = {}  # target -> file/block/network (dest_kind)

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
                    reset_database_connection()
        finally:
            reset_database_connection()

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
                reset_database_connection()
            self.stopping.wait(backoff_seconds(attempt))
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

    def on_event(self, target: str, job_type: str, status: str) -> None:
        with self.lock:
            if status == "ready":
                self.ready_events.setdefault(target, time.time())
            elif status in ("failed", "canceled"):
                self.bad_events[target] = status
        self.wakeup.set()

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

    @property
    def on_host(self) -> BlockJobHost:
        """The connection _drive holds open while the steps run (none between attempts)."""
        if self.host is None:
            raise RuntimeError(f"migration {self.id}: a step ran without a connection to its host")
        return self.host

    def load(self) -> Migration:
        return Migration.objects.select_related("hypervisor").get(pk=self.id)

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


def _refresh_inventory(migration_id: int, hypervisor, *, close_connection: bool = False, **options) -> None:
    try:
        hypervisor_sync(hypervisor, **options)
    except Exception:  # the inventory catches up on its next sync anyway
        log.exception("migration %s: inventory refresh failed", migration_id)
    finally:
        if close_connection:
            connection.close()  # this thread's own database connection
