"""The moves of the state machine and the engine's writes: `migration_transition` (every
state change, with its audit event, in one transaction), the copy limits' admission
(`migration_start_or_queue`), progress and notes. Fenced by the caller's lease when the
engine writes; what the row says is published (and the workers woken) on commit."""

from __future__ import annotations

from collections.abc import Set

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from blockmig.audit import audit_record
from blockmig.leases import Lease, LeaseLost
from blockmig.limits.queue_push import changes_queue, queue_changed_on_commit
from blockmig.limits.rules import Wait, slot_for
from blockmig.live import publish
from blockmig.models import Migration, MigrationDisk
from blockmig.notify.outbox import notify_transition
from blockmig.plans.progress import plan_migration_ended
from blockmig.states import TERMINAL_STATES, State, next_state
from blockmig.wake import wake_workers


class StateMoved(Exception):
    """The row is no longer in the state the caller expected (someone else moved it)."""


def publish_on_commit(migration_id: int) -> None:
    transaction.on_commit(lambda: publish.migration_changed(migration_id))


def wake_on_commit(migration_id: int) -> None:
    """The worker that drives it (or, for a new one, any worker with room) acts at once."""
    transaction.on_commit(lambda: wake_workers(migration_id))


def _check_fence(migration: Migration, lease: Lease | None) -> None:
    if lease is not None and (migration.lease_owner, migration.lease_epoch) != (lease.owner, lease.epoch):
        raise LeaseLost(
            f"#{migration.pk} is held by {migration.lease_owner or 'nobody'} (epoch {migration.lease_epoch}), not by {lease.owner} (epoch {lease.epoch})"
        )


def _with_lease(details: dict | None, lease: Lease | None) -> dict | None:
    return details if lease is None else {**(details or {}), **lease.audit()}


def migration_transition(
    migration_id: int,
    to: str,
    *,
    expect: Set[str] | None = None,
    actor=None,
    event_type: str | None = None,
    details: dict | None = None,
    lease: Lease | None = None,
    **fields,
) -> Migration:
    """Move a migration to `to` through the state machine, with its audit event, in one
    transaction. `expect` guards against a concurrent change: StateMoved if the row left it.
    The engine passes its `lease`: LeaseLost if another worker has claimed the row since."""
    with transaction.atomic():
        migration = Migration.objects.select_for_update().select_related("hypervisor").get(pk=migration_id)
        _check_fence(migration, lease)
        current = migration.state
        if expect is not None and current not in expect:
            raise StateMoved(f"#{migration_id} is {current}, expected {', '.join(sorted(expect))}")
        migration.state = next_state(current, to)
        for name, value in fields.items():
            setattr(migration, name, value)
        changed = ["state", *fields]
        if migration.state in TERMINAL_STATES:
            migration.finished_at = timezone.now()
            changed.append("finished_at")
            MigrationDisk.objects.filter(migration=migration).update(active=False)
        # Only what this change sets: a full save would write back lease fields read a
        # moment ago over a heartbeat's newer ones.
        migration.save(update_fields=changed)
        audit_record(
            event_type=event_type or str(migration.state),
            migration=migration,
            actor=actor,
            from_state=current,
            to_state=migration.state,
            details=_with_lease(details, lease),
        )
        # The outbox row commits with the change; it is sent later, outside (blockmig.notify).
        notify_transition(migration, from_state=current, event_type=event_type or str(migration.state), actor=actor)
        if migration.plan_id and migration.state in TERMINAL_STATES:
            plan_migration_ended(migration.plan_id)  # the plan ends with its last migration
        publish_on_commit(migration.pk)
        if changes_queue(current, migration.state):
            queue_changed_on_commit(migration.hypervisor_id, exclude=migration.pk)
    return migration


def migration_start_or_queue(
    migration_id: int, *, lease: Lease | None, details: dict | None = None, **fields
) -> Migration | Wait:
    """The copy limits' decision (blockmig.limits), made where the database serialises it:
    under the hypervisor's row lock the migration either moves to copying (with `fields`,
    the saved definition among them) or waits in queued with its place and reason. Returns
    the migration, or the Wait when it queued (or stays queued)."""
    with transaction.atomic():
        # Every admission to this host's slots holds the host's row lock. It is taken with
        # the migration's, in one statement and in the order migration_transition takes
        # both (its select_related locks the host too), so no two transactions wait for
        # each other in a circle.
        migration = (
            Migration.objects.select_for_update(of=("self", "hypervisor")).select_related("hypervisor").get(pk=migration_id)
        )
        _check_fence(migration, lease)
        wait = slot_for(migration)
        if wait is None:
            return migration_transition(
                migration_id, State.COPYING, expect={State.PREFLIGHT, State.QUEUED}, details=details, lease=lease, **fields
            )
        if migration.state != State.QUEUED:
            migration_transition(
                migration_id,
                State.QUEUED,
                expect={State.PREFLIGHT},
                details={"position": wait.position, "reason": wait.reason, "waits_for": list(wait.behind)},
                lease=lease,
            )
    return wait


def migration_record_progress(migration_id: int, *, totals: dict, disks: dict[int, dict], lease: Lease | None = None) -> None:
    """Progress from the engine (throttled by the caller): not a state change, not audited."""
    with transaction.atomic():
        rows = Migration.objects.filter(lease.fence() if lease else Q(pk=migration_id)).update(**totals)
        if not rows and lease is not None:
            raise LeaseLost(f"#{migration_id}: progress write refused, the lease moved on")
        for disk_id, values in disks.items():
            MigrationDisk.objects.filter(pk=disk_id).update(**values)
        publish_on_commit(migration_id)


def migration_note(
    migration_id: int, event_type: str, details: dict | None = None, *, lease: Lease | None = None, **fields
) -> None:
    """An engine step that is not a state change (definition saved/restored, takeover,
    verification, reconnection) recorded with its audit event in one transaction."""
    with transaction.atomic():
        migration = Migration.objects.select_for_update().select_related("hypervisor").get(pk=migration_id)
        _check_fence(migration, lease)
        for name, value in fields.items():
            setattr(migration, name, value)
        if fields:
            migration.save(update_fields=list(fields))
        audit_record(
            event_type=event_type,
            migration=migration,
            from_state=migration.state,
            to_state=migration.state,
            details=_with_lease(details, lease),
        )
        publish_on_commit(migration_id)
