"""One worker process: claims migrations that need a driver and drives them in a bounded pool.

The loop is a controller's: whenever a slot is free it claims the oldest active migration
nobody holds (blockmig.leases), hands it to a driver thread, and sleeps until a wake-up
over Redis (a new request, an approval) or the slow poll, which also finds leases that ran
out because their worker died. Nothing here is fatal: a database or Redis outage is logged
and retried, and the process keeps running.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import Error as DatabaseError  # any database failure, InterfaceError included
from django.db import connection

from blockmig.engine.driver import Driver
from blockmig.health import WorkerHeartbeat
from blockmig.leases import Lease, lease_claim_next
from blockmig.notify.sender import DeliveryLoop
from blockmig.wake import WakeListener

log = logging.getLogger("blockmig.worker")


def _drop_unusable_connection() -> None:
    """Keep this thread's connection across passes, unless the database dropped it."""
    if connection.connection is not None and not connection.is_usable():
        connection.close()


class DrivePool:
    """A bounded pool of drivers in one worker process. A migration is mostly waiting on
    libvirt (and on a human, before the pivot), so one process drives several at once."""

    def __init__(self, slots: int, on_free=None):
        self.slots = slots
        self.stopping = threading.Event()
        self.executor = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="drive")
        self.lock = threading.Lock()
        self.drivers: dict[int, Driver] = {}
        self.on_free = on_free or (lambda: None)

    def has_room(self) -> bool:
        with self.lock:
            return len(self.drivers) < self.slots

    def running(self) -> set[int]:
        with self.lock:
            return set(self.drivers)

    def submit(self, lease: Lease) -> None:
        driver = Driver(lease, self.stopping)
        with self.lock:
            self.drivers[lease.migration_id] = driver
        self.executor.submit(self._run, driver)

    def wake(self, migration_id: int) -> bool:
        """Wake the driver of this migration; False when this process does not drive it."""
        with self.lock:
            driver = self.drivers.get(migration_id)
        if driver is not None:
            driver.wakeup.set()
        return driver is not None

    def _run(self, driver: Driver) -> None:
        # A pool thread keeps its database connection from one driver to the next (opening
        # one costs a PostgreSQL round trip or three on the way to the block copy).
        try:
            _drop_unusable_connection()
            driver.run()
        except Exception:
            log.exception("migration %s: driver crashed", driver.id)
            connection.close()
        finally:
            with self.lock:
                self.drivers.pop(driver.id, None)
            self.on_free()

    def drain(self, timeout: float) -> None:
        """SIGTERM: drivers hand their leases over at their next tick; wait for them."""
        self.stopping.set()
        for driver in list(self.drivers.values()):
            driver.wakeup.set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.running():
            time.sleep(0.1)
        self.executor.shutdown(wait=False, cancel_futures=True)


class Worker:
    def __init__(self, worker_id: str, slots: int | None = None):
        self.worker_id = worker_id
        self.wakeup = threading.Event()
        self.pool = DrivePool(slots or settings.BLOCKMIG_WORKER_SLOTS, on_free=self.wakeup.set)

    @property
    def stopping(self) -> threading.Event:
        return self.pool.stopping

    def on_wake(self, migration_id: int) -> None:
        if not self.pool.wake(migration_id):
            self.wakeup.set()

    def claim(self) -> int:
        """Claim migrations while there is room; how many were claimed."""
        claimed = 0
        while self.pool.has_room() and not self.stopping.is_set():
            lease = lease_claim_next(self.worker_id, exclude=self.pool.running())
            if lease is None:
                break
            log.info(
                "migration %s: claimed (epoch %s%s)",
                lease.migration_id,
                lease.epoch,
                f", taking over from {lease.previous_owner}" if lease.is_takeover else "",
            )
            self.pool.submit(lease)
            claimed += 1
        return claimed

    def run(self) -> None:
        WakeListener(self.on_wake, self.stopping).start()
        # Notifications are sent by a thread of each worker (blockmig.notify.sender says why).
        DeliveryLoop(self.worker_id, self.stopping).start()
        heartbeat = WorkerHeartbeat(self.worker_id)  # what /readyz counts as a live worker
        log.info(
            "worker %s: %d migration slots, polling every %g s", self.worker_id, self.pool.slots, settings.BLOCKMIG_POLL_SECONDS
        )
        while not self.stopping.is_set():
            self.wakeup.clear()
            heartbeat.beat()
            try:
                _drop_unusable_connection()
                self.claim()
            except DatabaseError as error:
                log.warning("worker %s: cannot claim migrations (%s); retrying", self.worker_id, error)
                connection.close()
            except Exception:
                log.exception("worker %s: claim pass failed", self.worker_id)
            self.wakeup.wait(settings.BLOCKMIG_POLL_SECONDS)
        heartbeat.forget()

    def drain(self, timeout: float = 30) -> None:
        self.pool.drain(timeout)
