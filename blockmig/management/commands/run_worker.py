"""`manage.py run_worker`: claim and drive migrations (blockmig.worker).

SIGTERM/SIGINT drain: claim nothing more, let drivers hand their leases over (the block
jobs keep running in QEMU), exit. A second signal exits at once.
"""

import logging
import signal
import sys

from django.core.management.base import BaseCommand

from blockmig.leases import new_worker_id
from blockmig.worker import Worker

log = logging.getLogger("blockmig.worker")


class Command(BaseCommand):
    help = "Run a blockmig worker: claims active migrations and drives them against libvirt."

    def handle(self, *args, verbosity: int = 1, **options):
        logging.getLogger("blockmig").setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
        worker = Worker(new_worker_id())

        def drain(signum, _frame):
            if worker.stopping.is_set():
                sys.exit(1)  # second signal: stop now
            log.warning("%s: draining (drivers hand their migrations over)", signal.strsignal(signum))
            worker.stopping.set()
            worker.wakeup.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, drain)
        try:
            worker.run()
        finally:
            worker.drain(timeout=30)
            log.info("worker %s stopped", worker.worker_id)
