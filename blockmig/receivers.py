"""blockmig's side of the inventory's signals: people's changes to hypervisors go into the
audit trail (hosts announces them; it does not import blockmig for this)."""

from __future__ import annotations

from django.dispatch import receiver

from blockmig.audit import audit_record
from hosts.signals import hypervisor_changed


@receiver(hypervisor_changed, dispatch_uid="blockmig.audit_hypervisor_changed")
def audit_hypervisor_changed(sender, *, hypervisor, user, action: str, details: dict, **kwargs) -> None:
    # Runs inside the transaction that made the change: both commit, or neither.
    audit_record(
        event_type=f"hypervisor_{action}",
        actor=user,
        hypervisor_name=hypervisor.name,
        details=details,
    )
