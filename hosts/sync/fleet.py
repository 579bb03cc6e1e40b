"""fleet_sync: many hypervisors at once, each in a thread of its own, so that one host that
hangs costs only its own time-out. Separate from hypervisor_sync, which knows one host and
no threads; this module knows threads and not what one sync does."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed

from django.conf import settings
from django.db import connections

from hosts import models
from hosts.sync.hypervisor import SyncResult, hypervisor_sync

logger = logging.getLogger(__name__)


def fleet_sync(
    hypervisors: Iterable[models.Hypervisor],
    *,
    workers: int | None = None,
    pool: ThreadPoolExecutor | None = None,
    on_result: Callable[[models.Hypervisor, SyncResult], None] | None = None,
) -> dict[int, SyncResult]:
    """Sync many hypervisors, at most `workers` (BLOCKMIG_SYNC_WORKERS) at a time.

    Each host runs in a thread of its own with its own connection and deadline, so a host
    that hangs or drops packets costs its thread its own time-out and nobody else anything.
    `on_result` is called from the caller's thread as each host finishes (finishing order).
    Returns hypervisor id -> result; a sync that crashed is a failed result, not an exception.
    """
    own_pool = pool is None
    if pool is None:
        pool = ThreadPoolExecutor(max_workers=max(1, workers or settings.BLOCKMIG_SYNC_WORKERS), thread_name_prefix="sync")
    results: dict[int, SyncResult] = {}
    try:
        futures = {pool.submit(_sync_in_thread, hypervisor): hypervisor for hypervisor in hypervisors}
        for future in as_completed(futures):
            hypervisor = futures[future]
            results[hypervisor.pk] = future.result()
            if on_result is not None:
                on_result(hypervisor, results[hypervisor.pk])
    finally:
        if own_pool:
            pool.shutdown(wait=True)
    return results


def _sync_in_thread(hypervisor: models.Hypervisor) -> SyncResult:
    try:
        return hypervisor_sync(hypervisor)
    except Exception:
        # A database or programming error for one host must not stop the others' syncs.
        logger.exception("sync of %s crashed", hypervisor.name)
        return SyncResult(ok=False, error=f"The sync of {hypervisor.name} crashed; the log of the sync says why.")
    finally:
        # Pool threads each hold their own database connection; give it back after every host.
        connections.close_all()


def hypervisors_to_sync() -> Iterable[models.Hypervisor]:
    """The hypervisors the periodic sync visits."""
    return models.Hypervisor.objects.filter(enabled=True).order_by("name")
