"""The pure state machine: every legal transition is allowed, every other one refused."""

import itertools

import pytest

from blockmig.states import ACTIVE_STATES, TERMINAL_STATES, TRANSITIONS, IllegalTransition, State, next_state

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
