"""What an evacuation plan says about its own migrations' copies and pivots.

Two questions, one place: may this migration start its copy now (not while its plan is
paused or being aborted), and may it pivot now (only inside the plan's maintenance window,
and only with an approval: the plan's own when it covers its pivots, else the migration's).
The limits (blockmig.limits) and the engine ask these; nothing here writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.formats import date_format

from blockmig.models import Migration, Plan
from blockmig.plans.states import PlanState


def _when(moment: datetime) -> str:
    return date_format(timezone.localtime(moment), "Y-m-d H:i T")


def window_problem(plan: Plan, now: datetime | None = None) -> str:
    """Why the plan's window keeps pivots back now ("" = open, or no window)."""
    if plan.window_start is None:
        return ""
    now = now or timezone.now()
    if now < plan.window_start:
        return f"Pivots wait for plan #{plan.pk}'s maintenance window, which opens {_when(plan.window_start)}."
    if plan.window_end is not None and now >= plan.window_end:
        return (
            f"Plan #{plan.pk}'s maintenance window closed {_when(plan.window_end)}: pivots wait until an approver sets a "
            "new window (or abort the plan)."
        )
    return ""


def plan_of(migration: Migration) -> Plan | None:
    if migration.plan_id is None:
        return None
    return Plan.objects.filter(pk=migration.plan_id).first()


def copy_wait_reason(migration: Migration) -> str:
    """Why this migration's copy may not start yet because of its plan ("" = it may)."""
    plan = plan_of(migration)
    if plan is None:
        return ""
    if plan.state == PlanState.PAUSED:
        return f"Plan #{plan.pk} is paused: no new copies start until someone resumes it."
    if plan.state in (PlanState.ABORTING, PlanState.ABORTED):
        return f"Plan #{plan.pk} is being aborted."
    return ""


def pivot_wait_reason(migration: Migration, now: datetime | None = None) -> str:
    """Why a ready migration of a plan may not pivot yet because of the plan's window."""
    plan = plan_of(migration)
    return window_problem(plan, now) if plan is not None else ""


def pivot_allowed_by(migration: Migration, *, auto_pivot: bool, now: datetime | None = None) -> dict | None:
    """For a ready migration of a plan: what allows its pivot now, as audit details, or None
    (no plan, the window is shut, or nobody has approved yet)."""
    plan = plan_of(migration)
    if plan is None or window_problem(plan, now):
        return None
    details: dict = {"plan": plan.pk}
    if plan.window_start is not None:
        details["window"] = [plan.window_start.isoformat(), plan.window_end.isoformat() if plan.window_end else None]
    if plan.pivot_policy == Plan.PivotPolicy.PLAN and plan.approved_by is not None:
        return {**details, "policy": "plan_approval", "approved_by": plan.approved_by.get_username()}
    if migration.approved_by is not None:
        return {**details, "policy": "approved_pivot", "approved_by": migration.approved_by.get_username()}
    if auto_pivot:
        return {**details, "policy": "auto_pivot"}
    return None


def plan_paused(me: Any, usage: Any, ahead: Any) -> str | None:
    """A gate of blockmig.limits.rules (`GATES`): a copy of a paused plan waits, with
    the plan's reason, until someone resumes the plan."""
    migration = Migration.objects.filter(pk=me.id).only("pk", "plan_id").first()
    if migration is None or migration.plan_id is None:
        return None
    return copy_wait_reason(migration) or None


def pivot_covered(migration: Migration) -> str:
    """Why a ready migration of a plan needs no approval now, in words for its page ("" =
    it needs one): the plan's approval covers it, or it was approved while the window was shut."""
    plan = plan_of(migration)
    if plan is None:
        return ""
    waits = window_problem(plan)
    if plan.pivot_policy == Plan.PivotPolicy.PLAN and plan.approved_by is not None:
        then = "it waits for the plan's window" if waits else "it follows at the engine's next look"
        return f"Plan #{plan.pk}'s approval (by {plan.approved_by.get_username()}) covers this pivot: {then}."
    if migration.approved_by is not None and waits:
        return f"Approved by {migration.approved_by.get_username()}: the pivot waits for plan #{plan.pk}'s window."
    return ""
