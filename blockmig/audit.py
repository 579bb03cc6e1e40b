"""Writing audit events. Append-only: rows are created here and never changed.

`EventType` names every kind of event blockmig writes, with the words the pages show for
it; `audit_record` refuses a type that is not in it, so no event reaches the trail without
a label (tests/test_audit_types.py also checks every type the code writes).
"""

from __future__ import annotations

from contextvars import ContextVar

from django.db import models

from blockmig.models import AuditEvent, Migration


class EventType(models.TextChoices):
    # A state change is recorded under the state it reached, unless an action names it.
    REQUESTED = "requested", "Requested"
    PREFLIGHT = "preflight", "Preflight"
    QUEUED = "queued", "Queued for a copy slot"
    COPYING = "copying", "Copy started"
    READY = "ready", "Mirror ready"
    PIVOTING = "pivoting", "Pivoting"
    COMPLETED = "completed", "Completed"
    ABORTING = "aborting", "Aborting"
    ABORTED = "aborted", "Aborted"
    FAILED = "failed", "Failed"
    # What people do to a migration or a host's policy, and what they were refused.
    APPROVED = "approved", "Approved"
    ABORT_REQUESTED = "abort_requested", "Abort requested"
    BANDWIDTH_CHANGED = "bandwidth_changed", "Bandwidth changed"
    POLICY_CHANGED = "policy_changed", "Pivot policy changed"
    LIMITS_CHANGED = "limits_changed", "Copy limits changed"
    REFUSED = "refused", "Refused"
    # What the engine does along the way (blockmig.engine).
    AUTO_PIVOT = "auto_pivot", "Pivot by host policy"
    TAKEOVER = "takeover", "Taken over by another worker"
    UNDEFINED = "undefined", "Definition set aside for the copy"
    DEFINITION_RESTORED = "definition_restored", "Definition restored"
    VERIFIED = "verified", "Checked after the pivot"
    LIBVIRT_CONNECTION_LOST = "libvirt_connection_lost", "Connection to libvirt lost"
    LIBVIRT_RECONNECTED = "libvirt_reconnected", "Reconnected to libvirt"
    BANDWIDTH_SHARED = "bandwidth_shared", "Bandwidth share of the root applied"
    # People's changes to the inventory (hosts.signals, blockmig.receivers).
    HYPERVISOR_ADDED = "hypervisor_added", "Hypervisor added"
    HYPERVISOR_CHANGED = "hypervisor_changed", "Hypervisor changed"
    HYPERVISOR_DELETED = "hypervisor_deleted", "Hypervisor deleted"
    # Storage evacuation plans (blockmig.plans); each event names its plan in details["plan"].
    PLAN_CREATED = "plan_created", "Evacuation plan built"
    PLAN_APPROVED = "plan_approved", "Evacuation plan approved"
    PLAN_DISCARDED = "plan_discarded", "Evacuation plan discarded"
    PLAN_CONTINUED = "plan_continued", "Evacuation plan continued after an interruption"
    PLAN_RUNNING = "plan_running", "Evacuation plan running"
    PLAN_PAUSED = "plan_paused", "Evacuation plan paused"
    PLAN_RESUMED = "plan_resumed", "Evacuation plan resumed"
    PLAN_WINDOW_CHANGED = "plan_window_changed", "Plan maintenance window changed"
    PLAN_ABORT_REQUESTED = "plan_abort_requested", "Evacuation plan abort requested"
    PLAN_ABORTED = "plan_aborted", "Evacuation plan aborted"
    PLAN_DONE = "plan_done", "Evacuation plan done"
    PLAN_MIGRATION_REFUSED = "plan_migration_refused", "Plan disk could not be requested"
    PLAN_PIVOT = "plan_pivot", "Pivot covered by the plan's approval"
    PLAN_PIVOT_WINDOW = "plan_pivot_window", "Approved pivot waits for the plan's window"
    # Admins' changes to notifications (blockmig.notify.endpoints).
    WEBHOOK_ADDED = "webhook_added", "Webhook endpoint added"
    WEBHOOK_CHANGED = "webhook_changed", "Webhook endpoint changed"
    WEBHOOK_DELETED = "webhook_deleted", "Webhook endpoint deleted"
    WEBHOOK_TESTED = "webhook_tested", "Webhook endpoint tested"
    DELIVERY_RETRIED = "delivery_retried", "Notification delivery retried"
    # Sign-in (blockmig.login_audit).
    LOGIN_FAILED = "login_failed", "Sign-in failed"
    LOGIN_LOCKED_OUT = "login_locked_out", "Sign-in locked out"
    # Personal API tokens (blockmig.api.tokens).
    TOKEN_CREATED = "token_created", "API token created"
    TOKEN_REVOKED = "token_revoked", "API token revoked"


# How the actions of the running request reach blockmig, written on each event it records:
# the REST API sets it for one request (blockmig.api.views.base), the console's pages leave it "".
AUDIT_VIA: ContextVar[str] = ContextVar("audit_via", default="")


def event_label(event_type: str) -> str:
    """The words for an event type; a type no longer written (older rows) reads as itself."""
    if event_type in EventType.values:
        return str(EventType(event_type).label)
    return event_type.replace("_", " ").replace(".", " ").capitalize()


def audit_record(
    *,
    event_type: EventType | str,
    migration: Migration | None = None,
    actor=None,
    from_state: str = "",
    to_state: str = "",
    details: dict | None = None,
    hypervisor_name: str = "",
    domain_name: str = "",
) -> AuditEvent:
    """One audit row. Who (None = the engine), what, on which host/domain/disks."""
    event_type = EventType(event_type)  # ValueError for a type without a label
    targets = ""
    if migration is not None:
        hypervisor_name = hypervisor_name or migration.hypervisor.name
        domain_name = domain_name or migration.domain_name
        targets = ",".join(migration.disks.values_list("target", flat=True))
    return AuditEvent.objects.create(
        event_type=event_type.value,
        migration=migration,
        actor=actor if getattr(actor, "pk", None) else None,
        actor_name=actor.get_username() if getattr(actor, "pk", None) else "blockmig",
        hypervisor_name=hypervisor_name,
        domain_name=domain_name,
        disk_targets=targets,
        from_state=from_state,
        to_state=to_state,
        details=details or {},
        via=AUDIT_VIA.get(),
    )
