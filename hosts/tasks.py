"""Background work for the inventory, run by django.tasks workers (queue "sync")."""

from __future__ import annotations

from dataclasses import asdict

from django.tasks import task

from hosts.models import Hypervisor
from hosts.sync import hypervisor_sync


@task(queue_name="sync")
def sync_hypervisor(hypervisor_id: int, force: bool = False) -> dict:
    """Sync one hypervisor now (the "refresh now" button). Returns SyncResult as a dict.

    The id, not the object, is enqueued: the row may have changed or gone by the time a
    worker picks the task up.
    """
    hypervisor = Hypervisor.objects.filter(pk=hypervisor_id).first()
    if hypervisor is None:
        return {"ok": False, "error": f"Hypervisor {hypervisor_id} no longer exists."}
    return asdict(hypervisor_sync(hypervisor, force=force))
