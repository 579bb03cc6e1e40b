"""The migration state machine: pure, tested without libvirt."""

from django.db import models


class State(models.TextChoices):
    REQUESTED = "requested"
    PREFLIGHT = "preflight"
    QUEUED = "queued"  # preflight passed; waits for a copy slot (blockmig.limits)
    COPYING = "copying"
    READY = "ready"  # mirror ready, awaiting approval
    PIVOTING = "pivoting"
    COMPLETED = "completed"
    ABORTING = "aborting"
    ABORTED = "aborted"
    FAILED = "failed"


TRANSITIONS: dict[State, set[State]] = {
    State.REQUESTED: {State.PREFLIGHT, State.FAILED, State.ABORTED},
    State.PREFLIGHT: {State.COPYING, State.QUEUED, State.FAILED, State.ABORTED},
    # Nothing runs on the host while queued, so an abort ends it at once.
    State.QUEUED: {State.COPYING, State.FAILED, State.ABORTED},
    State.COPYING: {State.READY, State.ABORTING, State.FAILED},
    State.READY: {State.PIVOTING, State.ABORTING, State.COPYING, State.FAILED},
    State.PIVOTING: {State.COMPLETED, State.FAILED},
    State.ABORTING: {State.ABORTED, State.FAILED},
    State.COMPLETED: set(),
    State.ABORTED: set(),
    State.FAILED: set(),
}

TERMINAL_STATES = {State.COMPLETED, State.ABORTED, State.FAILED}
ACTIVE_STATES = set(State) - TERMINAL_STATES


def _states_reaching(goal: State) -> frozenset[State]:
    """The states from which some path through TRANSITIONS leads to `goal`."""
    found: set[State] = set()
    grew = True
    while grew:
        grew = False
        for state, targets in TRANSITIONS.items():
            if state not in found and (goal in targets or targets & found):
                found.add(state)
                grew = True
    return frozenset(found)


# What a person may still do to a migration follows from the table above: it has not
# pivoted while the pivot is still ahead of it.
BEFORE_PIVOT = _states_reaching(State.PIVOTING)


def may_approve(state: str) -> bool:
    """An approval moves the migration to pivoting: only where the table allows that move."""
    return State.PIVOTING in TRANSITIONS[State(state)]


def abort_target(state: str) -> State | None:
    """Where a person's abort takes a migration in `state`: straight to aborted where the
    table allows it (nothing has started on the host), else to aborting (the engine then
    cancels the copies); None once the pivot has started or the migration is over."""
    state = State(state)
    if state not in BEFORE_PIVOT:
        return None
    return State.ABORTED if State.ABORTED in TRANSITIONS[state] else State.ABORTING


def may_abort(state: str) -> bool:
    return abort_target(state) is not None


def may_change_bandwidth(state: str) -> bool:
    """The limit applies to the copy, so it may change until the pivot starts."""
    return State(state) in BEFORE_PIVOT


class IllegalTransition(Exception):
    pass


def next_state(current: str, target: str) -> State:
    """Return target if the machine allows current → target, else refuse with a reason."""
    current, target = State(current), State(target)
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"A migration that is {current.label.lower()} cannot become {target.label.lower()}.")
    return target
