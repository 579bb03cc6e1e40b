"""hypervisor_sync: read one hypervisor through the adapter and store what it says.

Cost is bounded on both sides. libvirt: a constant number of bulk calls plus one XML read
per new or changed domain (see HostConnection.inventory). Database: a constant number of
statements per sync, whatever the number of domains, because every write is a bulk
statement; only hosts with tens of thousands of rows split a statement into chunks.
A host that cannot be read keeps its last-known rows; the failure is recorded beside them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from hosts import models
from hosts.adapter import ConnectFailure, HostConnection, LibvirtFailure
from hosts.signals import announce_inventory_changed, reports_sync
from hosts.sync.store import store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncResult:
    ok: bool
    error: str = ""
    domains_seen: int = 0
    domains_reread: int = 0  # domains whose XML was read (new, changed, or all when forced)
    libvirt_calls: int = 0  # round trips, the connection's open included
    duration: float = 0.0  # seconds, libvirt and database together


@reports_sync
def hypervisor_sync(hypervisor: models.Hypervisor, *, force: bool = False, reread: Iterable[str] = ()) -> SyncResult:
    """Bring the stored inventory of `hypervisor` in line with what libvirt reports now.

    `force` reads every domain's XML again; `reread` names the uuids of domains to read
    again whatever their stats say (the engine's refresh after it started a block copy:
    the bulk calls plus one XML read, not one per domain of the host).

    Never raises for a host that cannot be reached or refuses: the result says so and the
    hypervisor row carries the error, while its domains keep their last-known data.
    """
    started = time.perf_counter()
    refusal = _refusal(hypervisor)
    if refusal:
        logger.info("sync of %s refused: %s", hypervisor.name, refusal)
        return SyncResult(ok=False, error=refusal, duration=time.perf_counter() - started)
    known = _known_signatures(hypervisor)
    for uuid in reread:
        known.pop(uuid, None)
    host = HostConnection(hypervisor.uri, timeout=settings.BLOCKMIG_CONNECT_TIMEOUT, keepalive=_keepalive())
    try:
        with host:
            inventory = host.inventory(known=known, force=force)
    except (ConnectFailure, LibvirtFailure) as failure:
        message = getattr(failure, "message", None) or str(failure)
        _record_failure(hypervisor, message)
        logger.warning("sync of %s failed: %s", hypervisor.name, message)
        return SyncResult(ok=False, error=message, libvirt_calls=host.calls, duration=time.perf_counter() - started)
    store(hypervisor, inventory)
    reread_count = sum(1 for d in inventory.domains if d.disks is not None)
    return SyncResult(
        ok=True,
        domains_seen=len(inventory.domains),
        domains_reread=reread_count,
        libvirt_calls=host.calls,
        duration=time.perf_counter() - started,
    )


def _keepalive() -> tuple[int, int] | None:
    interval = settings.BLOCKMIG_KEEPALIVE_INTERVAL
    return (interval, settings.BLOCKMIG_KEEPALIVE_COUNT) if interval > 0 else None


def _refusal(hypervisor: models.Hypervisor) -> str:
    """Why this host must not be connected to now ("" if it may be). Read from the row, not
    the object: the sync loop and the engine hold objects loaded before an admin disabled it."""
    enabled = models.Hypervisor.objects.filter(pk=hypervisor.pk).values_list("enabled", flat=True).first()
    if enabled is None:
        return f"{hypervisor.name} no longer exists."
    if not enabled:
        return f"{hypervisor.name} is disabled, so blockmig does not connect to it: an admin can enable it on its edit page."
    return ""


def _known_signatures(hypervisor: models.Hypervisor) -> dict[str, str]:
    """uuid → stats signature of the domains whose stored disks may be kept as they are.

    Domains with a block job are left out so that they are read again every sync: a
    mirror turning ready, and a job's progress, do not change the bulk stats.
    """
    known = dict(models.Domain.objects.filter(hypervisor=hypervisor).values_list("uuid", "signature"))
    with_jobs = models.Disk.objects.filter(domain__hypervisor=hypervisor).exclude(job_type="")
    for uuid in with_jobs.values_list("domain__uuid", flat=True):
        known.pop(uuid, None)
    return known


def _record_failure(hypervisor: models.Hypervisor, message: str) -> None:
    hypervisor.last_sync_attempt_at = timezone.now()
    hypervisor.last_sync_error = message
    hypervisor.save(update_fields=["last_sync_attempt_at", "last_sync_error"])
    announce_inventory_changed(hypervisor.pk)
