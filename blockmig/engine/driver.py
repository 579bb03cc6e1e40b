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

from django.conf import settings
from django.db import Error as DatabaseError  # any database failure, InterfaceError included

from blockmig.engine.base import Failed, Queued, StopDriving, backoff_seconds, reset_database_connection
from blockmig.engine.monitor import Monitoring
from blockmig.engine.pivot import Pivoting
from blockmig.engine.undo import Undoing
from blockmig.leases import LeaseLost, lease_release
from blockmig.lifecycle import StateMoved
from blockmig.states import TERMINAL_STATES, State
from hosts.adapter import ConnectFailure, ConnectionLost, LibvirtFailure, open_block_jobs

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS_BEFORE_COPY = 3  # nothing runs on the host yet: after these, fail


class Driver(Monitoring, Pivoting, Undoing):
    """The entry point (blockmig.worker runs one per claimed migration): `run` holds the
    lease, `_drive` keeps a connection to the host across outages, `_steps` dispatches on
    the row's state to the step of each layer."""

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
                    reset_database_connection()

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
                reset_database_connection()
                attempt += 1
            self.stopping.wait(backoff_seconds(attempt))

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
                reset_database_connection()
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
