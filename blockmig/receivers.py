"""blockmig's side of the inventory's signals: people's changes to hypervisors go into the
audit trail, committed syncs are pushed to open pages (hosts announces them; it does not
import blockmig for this)."""

from __future__ import annotations

from django.db import transaction
from django.dispatch import receiver

from blockmig import metrics
from blockmig.audit import audit_record
from blockmig.live import publish
from hosts.signals import hypervisor_changed, inventory_changed, sync_finished


@receiver(hypervisor_changed, dispatch_uid="blockmig.audit_hypervisor_changed")
def audit_hypervisor_changed(sender, *, hypervisor, user, action: str, details: dict, **kwargs) -> None:
    # Runs inside the transaction that made the change: both commit, or neither.
    audit_record(
        event_type=f"hypervisor_{action}",
        actor=user,
        hypervisor_name=hypervisor.name,
        details=details,
    )


@receiver(inventory_changed, dispatch_uid="blockmig.publish_inventory_changed")
def publish_inventory_changed(sender, *, hypervisor_id: int, **kwargs) -> None:
    # Sent after the commit; publish never raises (a Redis outage must not fail a sync).
    publish.inventory_changed(hypervisor_id)


@receiver(sync_finished, dispatch_uid="blockmig.count_sync_finished")
def count_sync_finished(sender, *, hypervisor, ok: bool, duration: float, **kwargs) -> None:
    # Counted in Redis, which every process that syncs shares (never raises).
    metrics.record_sync(hypervisor.name, ok=ok, duration=duration)


@receiver(hypervisor_changed, dispatch_uid="blockmig.forget_sync_stats")
def forget_sync_stats(sender, *, hypervisor, action: str, details: dict, **kwargs) -> None:
    gone = hypervisor.name if action == "deleted" else details.get("changes", {}).get("name", {}).get("from")
    if gone:
        transaction.on_commit(lambda: metrics.forget_sync_stats(gone))
