"""The evacuation plan's own state machine: pure, tested without a database.

A plan is built as a draft, approved once (four eyes), then runs its migrations; pausing
stops new copies from starting (copies already running go on), aborting aborts every
migration that has not pivoted. It is done when each of its migrations has ended.

`approved` is the short step in which the approval requests the plan's migrations; a plan
that stays there lost the process doing it, and an approver continues it
(blockmig.plans.recovery): no new transition, the same way on to running or done.
"""

from __future__ import annotations

from django.db import models


class PlanState(models.TextChoices):
    DRAFT = "draft", "Draft — awaiting review"
    APPROVED = "approved", "Approved — requesting its migrations"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused — no new copies start"
    ABORTING = "aborting", "Aborting"
    DONE = "done", "Done"
    ABORTED = "aborted", "Aborted"


PLAN_TRANSITIONS: dict[PlanState, set[PlanState]] = {
    PlanState.DRAFT: {PlanState.APPROVED, PlanState.ABORTED},
    PlanState.APPROVED: {PlanState.RUNNING, PlanState.ABORTING, PlanState.DONE},
    PlanState.RUNNING: {PlanState.PAUSED, PlanState.ABORTING, PlanState.DONE},
    PlanState.PAUSED: {PlanState.RUNNING, PlanState.ABORTING, PlanState.DONE},
    PlanState.ABORTING: {PlanState.ABORTED},
    PlanState.DONE: set(),
    PlanState.ABORTED: set(),
}

PLAN_TERMINAL = frozenset({PlanState.DONE, PlanState.ABORTED})
# States in which the plan's migrations exist and are moving.
PLAN_UNDER_WAY = frozenset({PlanState.APPROVED, PlanState.RUNNING, PlanState.PAUSED})


class IllegalPlanTransition(Exception):
    pass


def plan_next_state(current: str, target: str) -> PlanState:
    current_state, target_state = PlanState(current), PlanState(target)
    if target_state not in PLAN_TRANSITIONS[current_state]:
        raise IllegalPlanTransition(f"A plan that is {current_state.value} cannot become {target_state.value}.")
    return target_state


def plan_may(state: str, target: str) -> bool:
    return PlanState(target) in PLAN_TRANSITIONS[PlanState(state)]


def plan_may_continue(state: str) -> bool:
    """Only an approved plan is still requesting its migrations; once running, paused or
    over, every domain has had its request."""
    return PlanState(state) == PlanState.APPROVED
