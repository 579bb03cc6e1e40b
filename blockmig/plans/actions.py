"""What is done to a built evacuation plan: approve (four eyes; preflight again, then its
migrations requested through the lifecycle), discard, pause, resume, abort, and a change of
its maintenance window. Apart from building one (blockmig.plans.build) and continuing an
interrupted approval (blockmig.plans.recovery, which reuses the approval's tail,
`request_and_run`)."""

from __future__ import annotations

import functools
from collections import defaultdict
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from blockmig import lifecycle
from blockmig.errors import Refused
from blockmig.limits.queue_push import queue_changed_on_commit
from blockmig.models import Migration, Plan, PlanDisk
from blockmig.plans.checks import check_window, preflight_plan
from blockmig.plans.progress import plan_changed_on_commit, plan_finish
from blockmig.plans.recording import audit_and_refuse, audit_plan, move_plan
from blockmig.plans.rules import window_problem
from blockmig.plans.states import PlanState, plan_may
from blockmig.preflight.records import DiskRequest
from blockmig.states import ACTIVE_STATES, abort_target
from blockmig.wake import wake_workers

__all__ = [
    "plan_abort",
    "plan_approve",
    "plan_discard",
    "plan_pause",
    "plan_resume",
    "plan_set_window",
    "request_and_run",
]


def load_plan(plan: Plan) -> Plan:
    return Plan.objects.select_related("hypervisor", "author", "approved_by").get(pk=plan.pk)


def plan_approve(*, plan: Plan, user, timeout: float = 10.0) -> Plan:
    """Four eyes: an approver who is not the author. The whole plan is preflighted again
    (time passed since it was built); then each domain's disks are requested as one
    migration, and the plan runs."""
    plan = load_plan(plan)
    host = plan.hypervisor

    def refuse(message: str):
        audit_and_refuse(user=user, hypervisor=host, action="plan_approve", message=message, plan=plan)

    if not user.has_perm("blockmig.approve_plan"):
        refuse("Only a user with the approver role can approve an evacuation plan.")
    if plan.author_id == user.pk:
        refuse("You built this plan, so another approver must approve it (four eyes).")
    if plan.state != PlanState.DRAFT:
        refuse(f"Plan #{plan.pk} is {plan.state}: only a draft can be approved.")
    if plan.window_end is not None and plan.window_end <= timezone.now():
        refuse(f"Plan #{plan.pk}'s window has already ended: its author must set a new one before it can be approved.")
    items = list(plan.items.all())
    moving = [i for i in items if not i.blocked_reason]
    recheck = [PlanDisk(**{f.attname: getattr(i, f.attname) for f in PlanDisk._meta.concrete_fields}) for i in moving]
    free, problem = preflight_plan(plan, recheck, timeout=timeout)
    changed = [f"{i.domain_name}/{i.target}: {i.blocked_reason}" for i in recheck if i.blocked_reason]
    if changed:
        problem = "Since the plan was built: " + " ".join(changed) + " Build the plan again."
    if problem:
        refuse(problem)
    now = timezone.now()
    with transaction.atomic():
        plan = move_plan(
            plan,
            PlanState.APPROVED,
            event_type="plan_approved",
            user=user,
            details={"approved_by": user.get_username(), "free_at_target": free},
            approved_by=user,
            approved_at=now,
            requested_at=now,
        )
    return request_and_run(plan, moving)


def request_and_run(plan: Plan, moving: list[PlanDisk]) -> Plan:
    """What follows the approval of a plan: its migrations requested, then the plan runs
    (or is done, when nothing is active). Also how an interrupted approval is continued
    (blockmig.plans.recovery.plan_continue), with the disks still without a migration."""
    _request_migrations(plan, moving)
    with transaction.atomic():
        locked = Plan.objects.select_for_update().select_related("hypervisor").get(pk=plan.pk)
        if locked.state != PlanState.APPROVED:
            return load_plan(plan)  # aborted meanwhile: the abort ends it
        plan = move_plan(locked, PlanState.RUNNING, event_type="plan_running", details={"migrations": plan.migrations.count()})
        if not Migration.objects.filter(plan=plan, state__in=[s.value for s in ACTIVE_STATES]).exists():
            plan_finish(plan)  # every request was refused, or everything ended already
    return load_plan(plan)


def _request_migrations(plan: Plan, moving: list[PlanDisk]) -> None:
    """One migration per domain (its disks pivot together), through the request form's own
    lifecycle function; a refusal is recorded on the plan's disks and the rest go on.
    Before each domain the plan's `requested_at` is touched: the sign of life that keeps
    Continue from racing a slow request (blockmig.plans.recovery); no row touched means the
    plan is no longer approved (aborted meanwhile), so nothing more is requested."""
    by_domain: dict[str, list[PlanDisk]] = defaultdict(list)
    for item in moving:
        by_domain[item.domain_uuid].append(item)
    for uuid, found in by_domain.items():
        if not Plan.objects.filter(pk=plan.pk, state=PlanState.APPROVED).update(requested_at=timezone.now()):
            return
        try:
            migration = lifecycle.migration_request(
                user=plan.author,
                hypervisor=plan.hypervisor,
                domain_uuid=uuid,
                disks=[DiskRequest(i.target, i.destination) for i in found],
                mode=plan.mode,
                plan=plan,
            )
        except Refused as refused:
            with transaction.atomic():
                # A disk that got its migration meanwhile (a second request racing this
                # one, refused by the lifecycle) keeps it and shows no error.
                unrequested = PlanDisk.objects.filter(pk__in=[i.pk for i in found], migration__isnull=True)
                unrequested.update(request_error=refused.message)
                audit_plan(
                    plan,
                    "plan_migration_refused",
                    details={"domain": found[0].domain_name, "disks": [i.target for i in found], "reason": refused.message},
                )
                plan_changed_on_commit(plan.pk)
            continue
        PlanDisk.objects.filter(pk__in=[i.pk for i in found]).update(migration=migration)


def plan_discard(*, plan: Plan, user) -> Plan:
    plan = load_plan(plan)
    if not user.has_perm("blockmig.change_plan") and not user.has_perm("blockmig.approve_plan"):
        audit_and_refuse(user=user, hypervisor=plan.hypervisor, action="plan_discard", plan=plan,
                message="You need the operator or approver role to discard a plan.")  # fmt: skip
    if plan.state != PlanState.DRAFT:
        audit_and_refuse(user=user, hypervisor=plan.hypervisor, action="plan_discard", plan=plan,
                message=f"Plan #{plan.pk} is {plan.state}: only a draft can be discarded; abort a running plan.")  # fmt: skip
    with transaction.atomic():
        return move_plan(plan, PlanState.ABORTED, event_type="plan_discarded", user=user, finished_at=timezone.now())


def _pause_or_resume(plan: Plan, user, *, to: str, action: str, event_type: str) -> Plan:
    plan = load_plan(plan)
    if not user.has_perm("blockmig.change_plan"):
        audit_and_refuse(user=user, hypervisor=plan.hypervisor, action=action, plan=plan,
                message=f"You need the operator role to {action.removeprefix('plan_')} a plan.")  # fmt: skip
    if not plan_may(plan.state, to):
        verb = "paused" if to == PlanState.PAUSED else "resumed"
        audit_and_refuse(user=user, hypervisor=plan.hypervisor, action=action, plan=plan,
                message=f"Plan #{plan.pk} is {plan.state}: only a {'running' if verb == 'paused' else 'paused'} plan can be {verb}.")  # fmt: skip
    with transaction.atomic():
        plan = move_plan(plan, to, event_type=event_type, user=user)
        _queue_changed_on_commit(plan)
    return plan


def _queue_changed_on_commit(plan: Plan) -> None:
    """Queued migrations re-read what they wait for (a resumed plan's copies may start)."""
    queue_changed_on_commit(plan.hypervisor_id)


def plan_pause(*, plan: Plan, user) -> Plan:
    """No new copies start (copies already running go on, and ready ones still pivot)."""
    return _pause_or_resume(plan, user, to=PlanState.PAUSED, action="plan_pause", event_type="plan_paused")


def plan_resume(*, plan: Plan, user) -> Plan:
    return _pause_or_resume(plan, user, to=PlanState.RUNNING, action="plan_resume", event_type="plan_resumed")


def plan_abort(*, plan: Plan, user) -> Plan:
    """Abort every migration of the plan that has not pivoted (through the lifecycle: each
    audited, each guest stays on its source); the plan is aborted when the last one ends.
    Migrations already pivoting finish."""
    plan = load_plan(plan)
    if not user.has_perm("blockmig.abort_migration"):
        audit_and_refuse(user=user, hypervisor=plan.hypervisor, action="plan_abort", plan=plan,
                message="You need the operator or approver role to abort a plan.")  # fmt: skip
    if plan.state == PlanState.DRAFT:
        return plan_discard(plan=plan, user=user)
    if not plan_may(plan.state, PlanState.ABORTING):
        audit_and_refuse(user=user, hypervisor=plan.hypervisor, action="plan_abort", plan=plan,
                message=f"Plan #{plan.pk} is {plan.state}: there is nothing left to abort.")  # fmt: skip
    with transaction.atomic():
        plan = move_plan(plan, PlanState.ABORTING, event_type="plan_abort_requested", user=user)
    # One migration at a time, each in its own transaction: the plan's row is not held
    # while a migration's is (the engine locks them the other way round).
    for migration in Migration.objects.filter(plan=plan, state__in=[s.value for s in ACTIVE_STATES]).order_by("pk"):
        if abort_target(migration.state) is None:
            continue  # pivoting: it finishes on the copy
        try:
            lifecycle.migration_abort(migration=migration, user=user)
        except Refused:
            pass  # it moved on (pivoting, or ended) meanwhile: audited by the lifecycle
    with transaction.atomic():
        locked = Plan.objects.select_for_update().select_related("hypervisor").get(pk=plan.pk)
        if (
            locked.state == PlanState.ABORTING
            and not Migration.objects.filter(plan=plan, state__in=[s.value for s in ACTIVE_STATES]).exists()
        ):
            plan_finish(locked)
    return load_plan(plan)


def plan_set_window(*, plan: Plan, user, window_start: datetime | None, window_end: datetime | None) -> Plan:
    """Before the review its author (an operator) may change the window; once approved,
    only an approver may, since the window is part of what was approved."""
    plan = load_plan(plan)
    approved = plan.state != PlanState.DRAFT
    perm = "blockmig.approve_plan" if approved else "blockmig.change_plan"
    if not user.has_perm(perm):
        who = "an approver" if approved else "an operator"
        audit_and_refuse(user=user, hypervisor=plan.hypervisor, action="plan_set_window", plan=plan,
                message=f"Only {who} can change the window of a plan that is {plan.state}.")  # fmt: skip
    if plan.state in (PlanState.DONE, PlanState.ABORTED, PlanState.ABORTING):
        audit_and_refuse(user=user, hypervisor=plan.hypervisor, action="plan_set_window", plan=plan,
                message=f"Plan #{plan.pk} is {plan.state}: its window no longer matters.")  # fmt: skip
    try:
        check_window(window_start, window_end)
    except Refused as refused:
        audit_and_refuse(user=user, hypervisor=plan.hypervisor, action="plan_set_window", plan=plan, message=refused.message,
                field=refused.field)  # fmt: skip

    def iso(value):
        return value.isoformat() if value else None

    with transaction.atomic():
        locked = Plan.objects.select_for_update().select_related("hypervisor").get(pk=plan.pk)
        before = [iso(locked.window_start), iso(locked.window_end)]
        Plan.objects.filter(pk=plan.pk).update(window_start=window_start, window_end=window_end)
        locked.window_start, locked.window_end = window_start, window_end
        audit_plan(
            locked,
            "plan_window_changed",
            user=user,
            from_state=locked.state,
            details={"from": before, "to": [iso(window_start), iso(window_end)], "now": window_problem(locked) or "open"},
        )
        plan_changed_on_commit(locked.pk)
        # Ready migrations re-check at their next look (the engine polls every half second).
        for migration_id in Migration.objects.filter(plan=plan, state="ready").values_list("pk", flat=True):
            transaction.on_commit(functools.partial(wake_workers, migration_id))
    return load_plan(plan)
