"""Every write to a migration goes through these functions.

Each commits the new state and its audit event in one transaction, then publishes the
change to the channel layer on commit (blockmig.live.publish), so a browser never sees a state
the database does not have.

CONTRACT (implemented by the engine; the UI codes against these names):

    @dataclass(frozen=True)
    class DiskRequest: target: str; destination: str

    migration_request(*, user, hypervisor, domain_uuid: str, disks: list[DiskRequest],
                      mode="shallow", dest_format="qcow2", reuse_destination=False,
                      bandwidth_mib=0, synchronous_writes=False,
                      granularity=None, buf_size=None) -> Migration
        runs preflight synchronously (clear Refused on any problem, nothing changed),
        creates the row + audit "requested", wakes the workers, returns at once.
    migration_approve(*, migration, user) -> Migration      # approver, not the requester
    migration_abort(*, migration, user) -> Migration        # operator/approver, before pivot
    migration_set_bandwidth(*, migration, user, bandwidth_mib: int) -> Migration
    hypervisor_set_auto_pivot(*, hypervisor, user, enabled: bool) -> None   # admin
All raise blockmig.errors.Refused with a message that names what to fix.

The engine moves a migration through the same machine with migration_transition().
"""

from __future__ import annotations

from collections.abc import Set
from typing import NoReturn

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from blockmig import limits
from blockmig.audit import audit_record
from blockmig.errors import Refused
from blockmig.leases import Lease, LeaseLost
from blockmig.live import publish
from blockmig.models import AuditEvent, Migration, MigrationDisk
from blockmig.notify.outbox import notify_transition
from blockmig.plan_progress import plan_migration_ended
from blockmig.plan_rules import pivot_wait_reason
from blockmig.preflight import preflight_request
from blockmig.preflight.options import check_bandwidth
from blockmig.preflight.records import DiskRequest
from blockmig.states import TERMINAL_STATES, State, abort_target, may_approve, may_change_bandwidth, next_state
from blockmig.wake import wake_workers
from hosts.models import Domain

__all__ = [
    "DiskRequest",
    "StateMoved",
    "hypervisor_set_auto_pivot",
    "migration_abort",
    "migration_approve",
    "migration_request",
    "migration_set_bandwidth",
    "migration_transition",
]


class StateMoved(Exception):
    """The row is no longer in the state the caller expected (someone else moved it)."""


def _publish_on_commit(migration_id: int) -> None:
    transaction.on_commit(lambda: publish.migration_changed(migration_id))


def _wake_on_commit(migration_id: int) -> None:
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
        _publish_on_commit(migration.pk)
        if limits.changes_queue(current, migration.state):
            limits.queue_changed_on_commit(migration.hypervisor_id, exclude=migration.pk)
    return migration


def migration_start_or_queue(
    migration_id: int, *, lease: Lease | None, details: dict | None = None, **fields
) -> Migration | limits.Wait:
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
        wait = limits.slot_for(migration)
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


def _refuse(migration: Migration, user, action: str, message: str, field: str | None = None) -> NoReturn:
    """A refused human action is audited too, then raised."""
    with transaction.atomic():
        audit_record(
            event_type="refused",
            migration=migration,
            actor=user,
            from_state=migration.state,
            to_state=migration.state,
            details={"action": action, "reason": message},
        )
        _publish_on_commit(migration.pk)
    raise Refused(message, field)


def _audit_refused_request(refused: Refused, *, user, hypervisor, domain_uuid: str, disks: list[DiskRequest]) -> None:
    """A refused start leaves no migration row, only this audit event (committed even
    though the request fails)."""
    name = Domain.objects.filter(hypervisor=hypervisor, uuid=domain_uuid).values_list("name", flat=True).first()
    with transaction.atomic():
        audit_record(
            event_type="refused",
            actor=user,
            hypervisor_name=hypervisor.name,
            domain_name=name or domain_uuid,
            details={
                "action": "request",
                "reason": refused.message,
                "domain_uuid": domain_uuid,
                "disks": {d.target: d.destination for d in disks},
            },
        )


def migration_request_invalid(*, user, hypervisor, domain_uuid: str, errors: dict[str, list[str]]) -> None:
    """A request form sent with errors (a bad destination, bandwidth …) never reaches
    preflight, but it is a refused start all the same: audited with what was wrong."""
    reason = "; ".join(f"{field or 'form'}: {' '.join(messages)}" for field, messages in errors.items())
    _audit_refused_request(Refused(reason), user=user, hypervisor=hypervisor, domain_uuid=domain_uuid, disks=[])


def migration_request(
    *,
    user,
    hypervisor,
    domain_uuid: str,
    disks: list[DiskRequest],
    mode: str = "shallow",
    dest_format: str = "qcow2",
    reuse_destination: bool = False,
    bandwidth_mib=0,
    synchronous_writes: bool = False,
    granularity: int | None = None,
    buf_size: int | None = None,
    force_undefine: bool = False,
    plan=None,
) -> Migration:
    """`plan`: the evacuation plan asking (blockmig.plans), recorded on the migration."""
    evacuation = plan
    try:
        plan = preflight_request(
            user=user,
            hypervisor=hypervisor,
            domain_uuid=domain_uuid,
            disks=disks,
            mode=mode,
            dest_format=dest_format,
            reuse_destination=reuse_destination,
            bandwidth_mib=bandwidth_mib,
            synchronous_writes=synchronous_writes,
            granularity=granularity,
            buf_size=buf_size,
        )
    except Refused as refused:
        _audit_refused_request(refused, user=user, hypervisor=hypervisor, domain_uuid=domain_uuid, disks=disks)
        raise
    try:
        with transaction.atomic():
            migration = Migration.objects.create(
                hypervisor=hypervisor,
                domain_uuid=domain_uuid,
                domain_name=plan.domain_name,
                mode=mode,
                dest_format=dest_format,
                reuse_destination=reuse_destination,
                bandwidth_mib=check_bandwidth(bandwidth_mib),
                synchronous_writes=synchronous_writes,
                granularity=granularity,
                buf_size=buf_size,
                force_undefine=force_undefine,
                requested_by=user,
                plan=evacuation,
            )
            for disk in plan.disks:
                # The conditional unique constraint makes a concurrent second request of
                # the same disk fail here, whatever the preflight saw a moment ago.
                MigrationDisk.objects.create(
                    migration=migration,
                    hypervisor=hypervisor,
                    domain_uuid=domain_uuid,
                    target=disk.target,
                    source_path=disk.source_path,
                    source_chain=disk.source_chain,
                    destination=disk.destination,
                )
            audit_record(
                event_type="requested",
                migration=migration,
                actor=user,
                to_state=State.REQUESTED,
                details={
                    "disks": {
                        d.target: {"source": d.source_path, "destination": d.destination, "kind": d.kind} for d in plan.disks
                    },
                    "mode": mode,
                    "dest_format": dest_format,
                    "reuse_destination": reuse_destination,
                    "bandwidth_mib": migration.bandwidth_mib,
                    "synchronous_writes": synchronous_writes,
                    "granularity": granularity,
                    "buf_size": buf_size,
                    "force_undefine": force_undefine,
                    **({"plan": evacuation.pk} if evacuation is not None else {}),
                },
            )
            _publish_on_commit(migration.pk)
            _wake_on_commit(migration.pk)
    except IntegrityError:
        race = Refused("Another migration of one of these disks has just started: wait for it to finish.", "disks")
        _audit_refused_request(race, user=user, hypervisor=hypervisor, domain_uuid=domain_uuid, disks=disks)
        raise race from None
    return migration


def migration_approve(*, migration: Migration, user) -> Migration:
    migration.refresh_from_db()
    if not user.has_perm("blockmig.approve_migration"):
        _refuse(migration, user, "approve", "Only a user with the approver role can approve a pivot.")
    if migration.requested_by_id == user.pk:
        _refuse(migration, user, "approve", "You requested this migration, so another approver must approve it (four eyes).")
    if not may_approve(migration.state):
        _refuse(
            migration,
            user,
            "approve",
            f"Migration #{migration.pk} is {migration.state}: a pivot can be approved only once every disk's mirror is ready.",
        )
    waiting = pivot_wait_reason(migration)
    if waiting:
        return _approve_for_window(migration, user, waiting)
    try:
        with transaction.atomic():
            _wake_on_commit(migration.pk)
            return migration_transition(
                migration.pk,
                State.PIVOTING,
                expect={State.READY},
                actor=user,
                event_type="approved",
                details={"approved_by": user.get_username()},
                approved_by=user,
            )
    except StateMoved:
        migration.refresh_from_db()
        _refuse(migration, user, "approve", f"Migration #{migration.pk} changed to {migration.state} before the approval landed.")


def _approve_for_window(migration: Migration, user, waiting: str) -> Migration:
    """An approval given while the plan's window is shut: recorded now, the pivot follows
    when the window opens (the engine asks blockmig.plan_rules)."""
    with transaction.atomic():
        locked = Migration.objects.select_for_update().select_related("hypervisor").get(pk=migration.pk)
        if locked.state != State.READY:
            refusal = f"Migration #{locked.pk} changed to {locked.state} before the approval landed."
        else:
            refusal = ""
            Migration.objects.filter(pk=locked.pk).update(approved_by=user)
            locked.approved_by = user
            audit_record(
                event_type="plan_pivot_window",
                migration=locked,
                actor=user,
                from_state=locked.state,
                to_state=locked.state,
                details={"approved_by": user.get_username(), "plan": locked.plan_id, "waits": waiting},
            )
            _publish_on_commit(locked.pk)
    if refusal:
        _refuse(locked, user, "approve", refusal)
    return locked


def migration_abort(*, migration: Migration, user, _again: bool = True) -> Migration:
    migration.refresh_from_db()
    if not user.has_perm("blockmig.abort_migration"):
        _refuse(migration, user, "abort", "You need the operator or approver role to abort a migration.")
    target = abort_target(migration.state)
    # Any state this abort would leave the same way (a worker may move the row meanwhile).
    expect = {state for state in State if abort_target(state) == target}
    details = None
    if migration.state == State.QUEUED:
        wait = limits.slot_for(migration)
        details = {"removed_from_queue": True, "position": wait.position if wait else 1}
    try:
        if target == State.ABORTED:
            # Nothing has been started on the host yet (the engine starts jobs only after
            # moving to copying, and that move checks the state), so abort at once.
            return migration_transition(
                migration.pk, State.ABORTED, expect=expect, actor=user, event_type="aborted", details=details
            )
        if target == State.ABORTING:
            with transaction.atomic():
                _wake_on_commit(migration.pk)
                return migration_transition(
                    migration.pk,
                    State.ABORTING,
                    expect=expect,
                    actor=user,
                    event_type="abort_requested",
                )
    except StateMoved:
        migration.refresh_from_db()
        if _again and abort_target(migration.state) not in (None, target):
            # A worker moved it on meanwhile (a queued copy started): abort it from there.
            return migration_abort(migration=migration, user=user, _again=False)
    _refuse(
        migration,
        user,
        "abort",
        f"Migration #{migration.pk} is {migration.state}: only a migration that has not pivoted yet can be aborted.",
    )


def migration_set_bandwidth(*, migration: Migration, user, bandwidth_mib) -> Migration:
    """Record the new limit; the worker that drives the migration applies it to the running
    block jobs (a web request never waits on libvirt)."""
    migration.refresh_from_db()
    if not user.has_perm("blockmig.change_migration"):
        _refuse(
            migration, user, "set_bandwidth", "You need the operator role to change a migration's bandwidth.", "bandwidth_mib"
        )
    try:
        value = check_bandwidth(bandwidth_mib)
    except Refused as refused:
        _refuse(migration, user, "set_bandwidth", refused.message, "bandwidth_mib")
    with transaction.atomic():
        # Locked, so an approval landing at the same moment is either before (refused here)
        # or after (the pivot happens with this limit recorded): the audit says which.
        locked = Migration.objects.select_for_update().select_related("hypervisor").get(pk=migration.pk)
        if not may_change_bandwidth(locked.state):
            refusal = f"Migration #{locked.pk} is {locked.state}: bandwidth can change only before the pivot."
        else:
            refusal = None
            previous = locked.bandwidth_mib
            Migration.objects.filter(pk=locked.pk).update(bandwidth_mib=value)
            locked.bandwidth_mib = value
            audit_record(
                event_type="bandwidth_changed",
                migration=locked,
                actor=user,
                from_state=locked.state,
                to_state=locked.state,
                details={"from_mib": previous, "to_mib": value},
            )
            _publish_on_commit(locked.pk)
            _wake_on_commit(locked.pk)
    if refusal:
        _refuse(locked, user, "set_bandwidth", refusal, "bandwidth_mib")
    return locked


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


def migration_record_progress(migration_id: int, *, totals: dict, disks: dict[int, dict], lease: Lease | None = None) -> None:
    """Progress from the engine (throttled by the caller): not a state change, not audited."""
    with transaction.atomic():
        rows = Migration.objects.filter(lease.fence() if lease else Q(pk=migration_id)).update(**totals)
        if not rows and lease is not None:
            raise LeaseLost(f"#{migration_id}: progress write refused, the lease moved on")
        for disk_id, values in disks.items():
            MigrationDisk.objects.filter(pk=disk_id).update(**values)
        _publish_on_commit(migration_id)


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
        _publish_on_commit(migration_id)
