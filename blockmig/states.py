"""The migration state machine: pure, tested without libvirt."""

from django.db import models


class State(models.TextChoices):
    REQUESTED = "requested"
    PREFLIGHT = "preflight"
    COPYING = "copying"
    READY = "ready"  # mirror ready, awaiting approval
    PIVOTING = "pivoting"
    COMPLETED = "completed"
    ABORTING = "aborting"
    ABORTED = "aborted"
    FAILED = "failed"


TRANSITIONS: dict[State, set[State]] = {
    State.REQUESTED: {State.PREFLIGHT, State.FAILED, State.ABORTED},
    State.PREFLIGHT: {State.COPYING, State.FAILED, State.ABORTED},
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


class IllegalTransition(Exception):
    pass


def next_state(current: str, target: str) -> State:
    """Return target if the machine allows current → target, else refuse with a reason."""
    current, target = State(current), State(target)
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"A migration that is {current.label.lower()} cannot become {target.label.lower()}.")
    return target
