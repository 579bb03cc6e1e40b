"""`manage.py run_worker`: django_tasks_db's worker loop plus what migrations need.

- Tasks from the migrations, sync and default queues run through django_tasks_db's Worker.
- drive_migration hands each migration to a bounded pool of driver threads in this process,
  so one worker drives several migrations at once; while the pool is full the worker stops
  taking migration tasks (they wait in the queue for a worker with room).
- A reaper thread re-enqueues, once per expiry, every active migration whose lease ran out
  (its worker died), so a live or restarted worker takes it over.
- SIGTERM/SIGINT drain: take no new tasks, let drivers hand their leases over, exit.
"""

import logging
import signal
import sys
import threading

from django.conf import settings
from django.db import close_old_connections, connection
from django_tasks_db.management.commands.db_worker import Command as DbWorkerCommand
from django_tasks_db.management.commands.db_worker import Worker

from blockmig.engine import DrivePool, install_pool
from blockmig.leases import leases_expired, new_worker_id, takeover_mark

log = logging.getLogger("blockmig.worker")
QUEUES = ["migrations", "sync", "default"]
MIGRATIONS_QUEUE = "migrations"


class PoolAwareWorker(Worker):
    """Takes migration tasks only while the drive pool has room."""

    def __init__(self, *, pool: DrivePool, **kwargs):
        self.pool = pool
        self._queues = kwargs.pop("queue_names")
        super().__init__(queue_names=self._queues, **kwargs)

    @property
    def queue_names(self) -> list[str]:
        if self.pool.has_room():
            return self._queues
        return [q for q in self._queues if q != MIGRATIONS_QUEUE]

    @queue_names.setter
    def queue_names(self, value) -> None:
        self._queues = value


def reap_forever(stopping: threading.Event) -> None:
    from blockmig.tasks import drive_migration

    while not stopping.wait(settings.BLOCKMIG_REAPER_SECONDS):
        try:
            close_old_connections()
            for migration_id in leases_expired(grace_seconds=max(30, settings.BLOCKMIG_LEASE_SECONDS * 2)):
                if takeover_mark(migration_id):
                    log.warning("migration %s: lease expired, enqueued a takeover", migration_id)
                    drive_migration.enqueue(migration_id)
        except Exception:
            log.exception("reaper pass failed")
    connection.close()


class Command(DbWorkerCommand):
    help = "Run a blockmig worker: background tasks, migration drivers and the takeover reaper."

    def handle(self, *, verbosity, interval, backend_name, max_tasks, worker_id, **options):
        self.configure_logging(verbosity)
        worker_id = new_worker_id()
        pool = DrivePool(settings.BLOCKMIG_WORKER_SLOTS, worker_id)
        install_pool(pool)
        worker = PoolAwareWorker(
            pool=pool,
            queue_names=QUEUES,
            interval=min(interval, 0.5),
            batch=False,
            backend_name=backend_name,
            startup_delay=False,
            max_tasks=max_tasks,
            worker_id=worker_id[:64],
            excluded_queue_names=[],
        )
        reaper = threading.Thread(target=reap_forever, args=(pool.stopping,), daemon=True, name="reaper")

        def drain(signum, _frame):
            if not worker.running:
                sys.exit(1)  # second signal: stop now
            log.warning("%s: draining (drivers hand their migrations over)", signal.strsignal(signum))
            worker.running = False
            pool.stopping.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, drain)
        log.info("worker %s: queues %s, %d migration slots", worker_id, ",".join(QUEUES), pool.slots)
        reaper.start()
        try:
            worker.run()
        finally:
            pool.drain(timeout=30)
            log.info("worker %s stopped", worker_id)
