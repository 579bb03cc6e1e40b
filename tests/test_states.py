"""The pure state machine: every legal transition is allowed, every other one refused; what
a person may do in each state (approve, abort, bandwidth) follows from the same table."""

import itertools

import pytest

from blockmig.states import (
    ACTIVE_STATES,
    BEFORE_PIVOT,
    TERMINAL_STATES,
    TRANSITIONS,
    IllegalTransition,
    State,
    abort_target,
    may_abort,
    may_approve,
    may_change_bandwidth,
    next_state,
)

LEGAL = [(a, b) for a, targets in TRANSITIONS.items() for b in targets]
ILLEGAL = [(a, b) for a, b in itertools.product(State, State) if b not in TRANSITIONS[a]]


@pytest.mark.parametrize(("current", "target"), LEGAL)
def test_legal_transition_allowed(current, target):
    assert next_state(current, target) == target


@pytest.mark.parametrize(("current", "target"), ILLEGAL)
def test_illegal_transition_refused(current, target):
    with pytest.raises(IllegalTransition):
        next_state(current, target)


def test_pivot_only_from_ready():
    assert [a for a, b in LEGAL if b == State.PIVOTING] == [State.READY]


def test_terminal_states_have_no_way_out():
    for state in TERMINAL_STATES:
        assert TRANSITIONS[state] == set()


def test_every_active_state_can_fail():
    for state in ACTIVE_STATES:
        assert State.FAILED in TRANSITIONS[state]


def test_abort_only_before_pivot():
    assert {a for a, b in LEGAL if b == State.ABORTING} == {State.COPYING, State.READY}


def test_unknown_state_refused():
    with pytest.raises(ValueError):
        next_state("copying", "teleported")


# ---- what a person may do, read from the table ---------------------------------------------


def test_before_the_pivot_is_every_state_that_can_still_reach_it():
    assert BEFORE_PIVOT == {State.REQUESTED, State.PREFLIGHT, State.QUEUED, State.COPYING, State.READY}


def test_approval_only_when_ready():
    assert {state for state in State if may_approve(state)} == {State.READY}


def test_abort_goes_straight_to_aborted_until_copies_run_then_through_aborting():
    assert {state: abort_target(state) for state in State if may_abort(state)} == {
        State.REQUESTED: State.ABORTED,
        State.PREFLIGHT: State.ABORTED,
        State.QUEUED: State.ABORTED,  # waiting for a slot: nothing runs on the host yet
        State.COPYING: State.ABORTING,
        State.READY: State.ABORTING,
    }


def test_every_abort_is_a_move_the_table_allows():
    for state in State:
        if may_abort(state):
            assert abort_target(state) in TRANSITIONS[state]


@pytest.mark.parametrize("state", [State.PIVOTING, State.ABORTING, *TERMINAL_STATES])
def test_nothing_to_abort_once_pivoting_aborting_or_over(state):
    # Aborting → aborted is the engine finishing an abort, not a second one by a person.
    assert abort_target(state) is None


def test_bandwidth_changes_until_the_pivot_starts():
    assert {state for state in State if may_change_bandwidth(state)} == BEFORE_PIVOT
