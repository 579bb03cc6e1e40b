"""Continuing a plan whose approval was interrupted.

`plan_approve` commits the approval, then requests the plan's migrations one domain at a
time (a host round trip each), then moves the plan to running. A web process that dies in
between (a crash, a restart, kill -9 mid-request) leaves the plan `approved` for good: some
domains have their migration, others none. `plan_continue` does what the dead process had
left: it requests only the disks without a migration, then the plan runs (or is done), by the
approval's own tail (blockmig.plans.actions.request_and_run).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone
from django.utils.formats import date_format

from blockmig.models import MigrationDisk, Plan, PlanDisk
from blockmig.plans.actions import load_plan, request_and_run
from blockmig.plans.progress import plan_changed_on_commit
from blockmig.plans.recording import audit_and_refuse, audit_plan
from blockmig.plans.states import plan_may_continue

__all__ = ["CONTINUE_AFTER", "continue_problem", "plan_continue", "unrequested"]

# How long an approved plan must have been quiet before it may be continued. The process
# requesting its migrations touches Plan.requested_at before each domain, and one request is
# bounded by the host connection's time-out (10 s) and keepalive (15 s): two quiet minutes
# mean nobody is requesting any more, so Continue does not race a request still under way.
CONTINUE_AFTER = timedelta(minutes=2)


def _when(moment: datetime) -> str:
    return date_format(timezone.localtime(moment), "H:i:s T")


def continue_problem(plan: Plan, now: datetime | None = None) -> str:
    """Why the plan cannot be continued now ("" = it can): the one rule for the page's button
    (blockmig.views.plans.plan_actions) and for plan_continue."""
    if not plan_may_continue(plan.state):
        return (
            f"Plan #{plan.pk} is {plan.state}: only a plan whose approval was interrupted (still approved, its migrations "
            "not all requested) can be continued."
        )
    last = plan.requested_at or plan.approved_at
    now = now or timezone.now()
    if last is not None and now - last < CONTINUE_AFTER:
        return (
            f"Plan #{plan.pk} is still requesting its migrations (the last one {_when(last)}): it can be continued from "
            f"{_when(last + CONTINUE_AFTER)} if nothing more happens by then."
        )
    return ""


def unrequested(plan: Plan) -> list[PlanDisk]:
    """The disks of the plan that move and have had no request yet. A disk whose request was
    refused (request_error) had its turn: the approval would not have asked again either."""
    return list(plan.items.filter(blocked_reason="", request_error="", migration__isnull=True))


def _link_orphans(plan: Plan) -> list[str]:
    """A process that died right after a migration was requested, before it noted it on the
    plan's disks, left a migration of the plan that no disk points to: note it now, so that
    disk is not requested a second time."""
    requested = {
        (uuid, target): migration_id
        for uuid, target, migration_id in MigrationDisk.objects.filter(migration__plan=plan)
        .order_by("migration_id")
        .values_list("domain_uuid", "target", "migration_id")
    }
    linked = []
    for item in plan.items.filter(blocked_reason="", migration__isnull=True):
        migration_id = requested.get((item.domain_uuid, item.target))
        if migration_id is not None:
            PlanDisk.objects.filter(pk=item.pk).update(migration_id=migration_id, request_error="")
            linked.append(f"{item.domain_name}/{item.target}")
    return linked


def plan_continue(*, plan: Plan, user) -> Plan:
    """An approver continues a plan whose approval was interrupted. Four eyes already held:
    the approval (by an approver who is not the author) is what this carries out, with the
    same disks, destinations and pivot policy, so any approver may continue it, the author
    and the approver included; the migrations are requested in the author's name, as the
    approval requests them, so each pivot's own four eyes are unchanged.

    The plan's row is locked while the rule is checked and the continuation claimed
    (requested_at set to now, the plan_continued event): a second press waits for that
    lock, then finds the plan busy within the grace and is refused, so no disk is asked for
    twice. The lifecycle's one-active-migration-per-disk constraint is the second line."""
    plan = load_plan(plan)
    if not user.has_perm("blockmig.approve_plan"):
        audit_and_refuse(user=user, hypervisor=plan.hypervisor, action="plan_continue", plan=plan,
                         message="Only a user with the approver role can continue an evacuation plan.")  # fmt: skip
    with transaction.atomic():
        # Only the plan's row: PostgreSQL refuses FOR UPDATE on the nullable approver's side.
        locked = Plan.objects.select_for_update(of=("self",)).select_related("hypervisor", "approved_by").get(pk=plan.pk)
        problem = continue_problem(locked)
        if not problem:
            linked = _link_orphans(locked)
            missing = unrequested(locked)
            locked.requested_at = timezone.now()
            locked.save(update_fields=["requested_at"])
            audit_plan(
                locked,
                "plan_continued",
                user=user,
                from_state=locked.state,
                details={
                    "approved_by": locked.approved_by.get_username() if locked.approved_by else "",
                    "requesting": [f"{i.domain_name}/{i.target}" for i in missing],
                    "already_requested": linked,
                },
            )
            plan_changed_on_commit(locked.pk)
    if problem:  # audited in a transaction of its own, so outside the one above
        audit_and_refuse(user=user, hypervisor=plan.hypervisor, action="plan_continue", plan=plan, message=problem)
    return request_and_run(locked, missing)
