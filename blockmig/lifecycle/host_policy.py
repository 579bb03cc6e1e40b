"""A host's auto-pivot policy: set by an admin (audited), and who set it (named in the
audit of each automatic pivot)."""

from __future__ import annotations

from django.db import transaction

from blockmig.audit import audit_record
from blockmig.errors import Refused
from blockmig.models import AuditEvent


def hypervisor_set_auto_pivot(*, hypervisor, user, enabled: bool) -> None:
    if not (user.is_superuser or user.has_perm("hosts.change_hypervisor")):
        message = "Only an admin can change a host's pivot policy."
        with transaction.atomic():
            # Audited like every refused human action, then raised.
            audit_record(
                event_type="refused",
                actor=user,
                hypervisor_name=hypervisor.name,
                details={
                    "action": "set_auto_pivot",
                    "reason": message,
                    "auto_pivot": bool(enabled),
                    "was": hypervisor.auto_pivot,
                },
            )
        raise Refused(message, "auto_pivot")
    with transaction.atomic():
        previous = type(hypervisor).objects.select_for_update().get(pk=hypervisor.pk).auto_pivot
        type(hypervisor).objects.filter(pk=hypervisor.pk).update(auto_pivot=bool(enabled))
        hypervisor.auto_pivot = bool(enabled)
        audit_record(
            event_type="policy_changed",
            actor=user,
            hypervisor_name=hypervisor.name,
            details={"auto_pivot": bool(enabled), "was": previous},
        )


def auto_pivot_policy_setter(hypervisor) -> str:
    """Who last set the host's auto-pivot policy (for the audit of each auto pivot)."""
    event = (
        AuditEvent.objects.filter(event_type="policy_changed", hypervisor_name=hypervisor.name)
        .order_by("-created_at", "-id")
        .first()
    )
    return event.actor_name if event else ""
