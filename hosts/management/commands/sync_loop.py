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
from django.db import close_old_connections, connections

from hosts.models import Hypervisor
from hosts.sync import SyncResult, hypervisor_sync, hypervisors_to_sync

logger = logging.getLogger("hosts.sync_loop")


def _sync_one(hypervisor: Hypervisor) -> SyncResult | None:
    try:
        return hypervisor_sync(hypervisor)
    except Exception:
        # A database or programming error for one host must not stop the others' syncs.
        logger.exception("sync of %s crashed", hypervisor.name)
        return None
    finally:
        # Pool threads each hold their own connection; give it back after every host.
        connections.close_all()


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
        parser.add_argument("--workers", type=int, default=4, help="Hosts synced at the same time.")

    def handle(self, *args, once: bool = False, interval: float | None = None, workers: int = 4, **options):
        self.stopping = threading.Event()
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        interval = settings.BLOCKMIG_SYNC_INTERVAL if interval is None else interval
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
        for hypervisor, result in zip(hypervisors, pool.map(_sync_one, hypervisors)):
            if result is not None and result.ok:
                self.stdout.write(
                    f"{hypervisor.name}: {result.domains_seen} domains, {result.domains_reread} re-read, "
                    f"{result.libvirt_calls} libvirt calls, {result.duration:.2f} s"
                )
            elif result is not None:
                self.stdout.write(f"{hypervisor.name}: FAILED {result.error}")
        self.stdout.flush()  # one line per host per round, visible at once in a log pipe

    def _stop(self, signum, frame) -> None:
        logger.info("signal %s: finishing the current round", signum)
        self.stopping.set()
