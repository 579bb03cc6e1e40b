"""Writing audit events. Append-only: rows are created here and never changed."""

from __future__ import annotations

from blockmig.models import AuditEvent, Migration


def audit_record(
    *,
    event_type: str,
    migration: Migration | None = None,
    actor=None,
    from_state: str = "",
    to_state: str = "",
    details: dict | None = None,
    hypervisor_name: str = "",
    domain_name: str = "",
) -> AuditEvent:
    """One audit row. Who (None = the engine), what, on which host/domain/disks."""
    targets = ""
    if migration is not None:
        hypervisor_name = hypervisor_name or migration.hypervisor.name
        domain_name = domain_name or migration.domain_name
        targets = ",".join(migration.disks.values_list("target", flat=True))
    return AuditEvent.objects.create(
        event_type=event_type,
        migration=migration,
        actor=actor if getattr(actor, "pk", None) else None,
        actor_name=actor.get_username() if getattr(actor, "pk", None) else "blockmig",
        hypervisor_name=hypervisor_name,
        domain_name=domain_name,
        disk_targets=targets,
        from_state=from_state,
        to_state=to_state,
        details=details or {},
    )
