"""Keep the inventory fresh: sync every enabled hypervisor every BLOCKMIG_SYNC_INTERVAL s.

Shaped like healthchecks' sendalerts: a loop in a management command, SIGTERM/SIGINT set a
flag and the round in progress finishes before the process exits, database connections
are recycled every round, and a bounded thread pool keeps one slow host from holding up
the others.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from hosts.models import Hypervisor
from hosts.sync.fleet import fleet_sync, hypervisors_to_sync
from hosts.sync.hypervisor import SyncResult

logger = logging.getLogger("hosts.sync_loop")


class Command(BaseCommand):
    help = "Sync every enabled hypervisor's inventory periodically until SIGTERM."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="Run one round and exit.")
        parser.add_argument(
            "--interval",
            type=float,
            default=None,
            help="Seconds between rounds (default: settings.BLOCKMIG_SYNC_INTERVAL).",
        )
        parser.add_argument(
            "--workers", type=int, default=None, help="Hosts synced at the same time (default: settings.BLOCKMIG_SYNC_WORKERS)."
        )

    def handle(self, *args, once: bool = False, interval: float | None = None, workers: int | None = None, **options):
        self.stopping = threading.Event()
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        interval = settings.BLOCKMIG_SYNC_INTERVAL if interval is None else interval
        workers = settings.BLOCKMIG_SYNC_WORKERS if workers is None else workers
        with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sync") as pool:
            while not self.stopping.is_set():
                started = time.monotonic()
                self.round(pool)
                if once:
                    break
                # Event.wait, not sleep: a SIGTERM between rounds ends the wait at once.
                self.stopping.wait(max(0.0, interval - (time.monotonic() - started)))
        self.stdout.write("sync loop stopped")

    def round(self, pool: ThreadPoolExecutor) -> None:
        close_old_connections()
        hypervisors = list(hypervisors_to_sync())
        close_old_connections()
        fleet_sync(hypervisors, pool=pool, on_result=self.report)

    def report(self, hypervisor: Hypervisor, result: SyncResult) -> None:
        """One line per host per round, as each host finishes, visible at once in a log pipe."""
        if result.ok:
            self.stdout.write(
                f"{hypervisor.name}: {result.domains_seen} domains, {result.domains_reread} re-read, "
                f"{result.libvirt_calls} libvirt calls, {result.duration:.2f} s"
            )
        else:
            self.stdout.write(f"{hypervisor.name}: FAILED {result.error}")
        self.stdout.flush()

    def _stop(self, signum, frame) -> None:
        logger.info("signal %s: finishing the current round", signum)
        self.stopping.set()
