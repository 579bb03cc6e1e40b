"""What people decide about a migration under way: approve the pivot (four eyes; inside
a plan's window), abort, change the bandwidth. A refusal is audited, then raised."""

from __future__ import annotations

from typing import NoReturn

from django.db import transaction

from blockmig.audit import audit_record
from blockmig.errors import Refused
from blockmig.lifecycle.transitions import StateMoved, migration_transition, publish_on_commit, wake_on_commit
from blockmig.limits.rules import slot_for
from blockmig.models import Migration
from blockmig.plans.rules import pivot_wait_reason
from blockmig.preflight.options import check_bandwidth
from blockmig.states import State, abort_target, may_approve, may_change_bandwidth


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
        publish_on_commit(migration.pk)
    raise Refused(message, field)


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
            wake_on_commit(migration.pk)
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
    when the window opens (the engine asks blockmig.plans.rules)."""
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
            publish_on_commit(locked.pk)
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
        wait = slot_for(migration)
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
                wake_on_commit(migration.pk)
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
            publish_on_commit(locked.pk)
            wake_on_commit(locked.pk)
    if refusal:
        _refuse(locked, user, "set_bandwidth", refusal, "bandwidth_mib")
    return locked
