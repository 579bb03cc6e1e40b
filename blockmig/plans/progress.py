"""How far an evacuation plan has got (totals for its page), and its end: when the last of
its migrations ends, the plan is done (or aborted, when an abort was asked for).

`plan_migration_ended` runs inside the transaction that moved a migration of the plan to a
terminal state (blockmig.lifecycle.migration_transition), so the plan's end and its audit
event commit with that change or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from blockmig import progress
from blockmig.audit import audit_record
from blockmig.live import publish
from blockmig.models import Migration, Plan, PlanDisk
from blockmig.plans.states import PlanState
from blockmig.states import ACTIVE_STATES, State

# How each disk of a plan reads on its page, from its migration's state.
DONE, RUNNING, QUEUED, FAILED, ABORTED, STAYS, WAITING = "done", "running", "queued", "failed", "aborted", "stays", "waiting"
RUNNING_STATES = {State.PREFLIGHT, State.COPYING, State.READY, State.PIVOTING, State.ABORTING}


def disk_status(item: PlanDisk, migration: Migration | None) -> str:
    if item.blocked_reason:
        return STAYS
    if item.request_error:
        return FAILED
    if migration is None:
        return WAITING  # the plan has not run yet
    if migration.state == State.COMPLETED:
        return DONE
    if migration.state == State.FAILED:
        return FAILED
    if migration.state == State.ABORTED:
        return ABORTED
    if migration.state in RUNNING_STATES:
        return RUNNING
    return QUEUED  # requested (or queued by the limits): its copy has not started


@dataclass
class PlanTotals:
    counts: dict[str, int] = field(default_factory=dict)
    bytes_planned: int = 0
    bytes_done: int = 0
    rate_bps: float = 0.0
    eta_seconds: float | None = None

    @property
    def moving(self) -> int:
        return sum(self.counts.get(k, 0) for k in (DONE, RUNNING, QUEUED, FAILED, ABORTED, WAITING))

    @property
    def percent(self) -> float | None:
        return progress.percent(self.bytes_done, self.bytes_planned)

    @property
    def rate_text(self) -> str:
        return progress.format_rate(self.rate_bps)

    @property
    def eta_text(self) -> str:
        return progress.format_eta(self.eta_seconds)


def plan_totals(items: list[PlanDisk], migrations: dict[int, Migration]) -> PlanTotals:
    """Disks by status, bytes copied, the summed measured rate of the copies running now
    and the ETA it gives for what is left (the migrations' own moving-average rates)."""
    totals = PlanTotals(counts={k: 0 for k in (DONE, RUNNING, QUEUED, FAILED, ABORTED, STAYS, WAITING)})
    left = 0
    seen: set[int] = set()
    for item in items:
        migration = migrations.get(item.migration_id) if item.migration_id else None
        status = disk_status(item, migration)
        item.status = status
        totals.counts[status] += 1
        if status == STAYS:
            continue
        if migration is None:
            totals.bytes_planned += item.bytes_to_copy
            if status != FAILED:
                left += item.bytes_to_copy
            continue
        if migration.pk in seen:
            continue  # one migration carries all the plan's disks of a domain
        seen.add(migration.pk)
        planned = sum(i.bytes_to_copy for i in items if i.migration_id == migration.pk)
        total = max(migration.bytes_total, planned) if migration.state != State.COMPLETED else migration.bytes_total
        totals.bytes_planned += total or planned
        done = migration.bytes_total if migration.state == State.COMPLETED else migration.bytes_done
        totals.bytes_done += done
        if migration.state in ACTIVE_STATES:
            left += max(0, (total or planned) - done)
            if migration.state in (State.COPYING, State.READY):
                totals.rate_bps += migration.rate_bps
    totals.eta_seconds = (left / totals.rate_bps) if totals.rate_bps > 0 and left > 0 else (0.0 if left == 0 else None)
    return totals


def plan_changed_on_commit(plan_id: int) -> None:
    transaction.on_commit(lambda: publish.plan_changed(plan_id))


def plan_migration_ended(plan_id: int) -> None:
    """Called inside the transaction of a plan migration's move to a terminal state."""
    plan = Plan.objects.select_for_update().select_related("hypervisor").get(pk=plan_id)
    plan_changed_on_commit(plan.pk)
    if plan.state not in (PlanState.RUNNING, PlanState.PAUSED, PlanState.ABORTING):
        return  # still requesting its migrations (approved): plan_approve or plan_continue finishes it
    if Migration.objects.filter(plan_id=plan_id, state__in=[s.value for s in ACTIVE_STATES]).exists():
        return
    plan_finish(plan)


def plan_finish(plan: Plan) -> None:
    """Every migration of the plan has ended: record the plan's end (caller's transaction)."""
    final = PlanState.ABORTED if plan.state == PlanState.ABORTING else PlanState.DONE
    ended = dict(Migration.objects.filter(plan=plan).values_list("state").annotate(n=Count("id")).order_by())
    previous = plan.state
    Plan.objects.filter(pk=plan.pk).update(state=final, finished_at=timezone.now())
    plan.state = final
    details = {"plan": plan.pk, "migrations": ended}
    if final == PlanState.ABORTED:
        audit_record(
            event_type="plan_aborted", hypervisor_name=plan.hypervisor.name, from_state=previous, to_state=final, details=details
        )
    else:
        audit_record(
            event_type="plan_done", hypervisor_name=plan.hypervisor.name, from_state=previous, to_state=final, details=details
        )
    plan_changed_on_commit(plan.pk)
