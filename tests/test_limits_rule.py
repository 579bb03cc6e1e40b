"""Copy limits: the queued state in the state machine, and the rule (blockmig.limits.rules)
with its words: positions in request order, the host's and a root's limits, zero for none,
network destinations, and the conditions and gates other rules add."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from blockmig.limits import rules
from blockmig.states import TRANSITIONS, State, abort_target, next_state
from tests.limits_fixtures import ROOT_A, ROOT_B, fresh, host, make


def test_queued_sits_between_preflight_and_copying_and_aborts_at_once():
    assert State.QUEUED in TRANSITIONS[State.PREFLIGHT]
    assert TRANSITIONS[State.QUEUED] == {State.COPYING, State.FAILED, State.ABORTED}
    assert abort_target(State.QUEUED) == State.ABORTED
    assert State.QUEUED.label == "Queued"
    with pytest.raises(Exception, match="cannot become"):
        next_state(State.QUEUED, State.READY)


def test_third_copy_waits_with_its_position_and_the_copy_that_frees_a_slot(make):
    first = make(State.COPYING, bytes_done=10, bytes_total=100)
    second = make(State.COPYING, bytes_done=70, bytes_total=100)
    third = make(State.PREFLIGHT, root=ROOT_B)
    wait = rules.slot_for(third)
    assert wait.position == 1
    assert wait.reason == f"2 copies already run on local (limit 2); next slot when #{second.pk} finishes"
    assert wait.text.startswith("1st in the queue: 2 copies already run on local")
    assert set(wait.behind) == {first.pk, second.pk}


def test_a_ready_mirror_is_named_as_the_next_to_free_a_slot(make):
    ready = make(State.READY, bytes_done=5, bytes_total=100)
    make(State.COPYING, bytes_done=99, bytes_total=100)
    assert rules.slot_for(make(State.PREFLIGHT)).reason.endswith(f"next slot when #{ready.pk} finishes")


def test_under_the_limit_a_migration_starts(make):
    make(State.COPYING)
    make(State.COMPLETED)
    make(State.QUEUED, root=ROOT_B)  # later than the one asking: not ahead of it
    assert rules.slot_for(make(State.PREFLIGHT, root=ROOT_B, created_at=timezone.now() - timedelta(hours=2))) is None


def test_request_order_a_later_request_never_takes_the_slot_an_earlier_one_waits_for(make):
    make(State.COPYING)
    earlier = make(State.QUEUED, root=ROOT_B)
    later = make(State.PREFLIGHT, root=ROOT_B)
    assert rules.slot_for(earlier) is None  # one slot free: the earlier one gets it
    wait = rules.slot_for(later)
    assert wait.position == 2
    assert wait.reason == f"1 earlier request waits for local first (#{earlier.pk}); 1 of 2 copies run there"
    assert rules.startable_queued() == [earlier.pk]


def test_positions_follow_request_order(make, host):
    host.max_copies = 1
    host.save()
    make(State.COPYING)
    queued = [make(State.QUEUED, root=ROOT_B) for _ in range(3)]
    waits = rules.waits_of([fresh(m) for m in queued])
    assert [waits[m.pk].position for m in queued] == [1, 2, 3]
    assert waits[queued[2].pk].text.startswith("3rd in the queue")


def test_root_limit_holds_copies_into_one_root_while_another_root_has_room(make, host):
    host.max_copies = 5
    host.root_limits = {ROOT_A: {"max_copies": 1, "bandwidth_mib": 0}}
    host.save()
    running = make(State.COPYING, root=ROOT_A)
    into_a = make(State.PREFLIGHT, root=ROOT_A)
    into_b = make(State.PREFLIGHT, root=ROOT_B)
    assert rules.slot_for(into_a).reason == (
        f"1 copy already writes into {ROOT_A} (limit 1); next slot when #{running.pk} finishes"
    )
    assert rules.slot_for(into_b) is None


def test_an_earlier_request_waiting_for_a_full_root_does_not_hold_back_another_root(make, host):
    host.max_copies = 5
    host.root_limits = {ROOT_A: {"max_copies": 1, "bandwidth_mib": 0}}
    host.save()
    make(State.COPYING, root=ROOT_A)
    waiting_for_a = make(State.QUEUED, root=ROOT_A)
    into_b = make(State.QUEUED, root=ROOT_B)
    assert rules.startable_queued() == [into_b.pk]
    assert rules.slot_for(waiting_for_a) is not None


def test_zero_means_no_limit(make, host):
    host.max_copies = 0
    host.root_limits = {ROOT_A: {"max_copies": 0, "bandwidth_mib": 0}}
    host.save()
    for _ in range(5):
        make(State.COPYING)
    assert rules.slot_for(make(State.PREFLIGHT)) is None


def test_a_limit_lowered_below_the_running_copies_says_how_many_must_finish(make, host):
    host.max_copies = 1
    host.save()
    a, b = make(State.COPYING, bytes_done=9, bytes_total=10), make(State.COPYING, bytes_done=1, bytes_total=10)
    reason = rules.slot_for(make(State.PREFLIGHT, root=ROOT_B)).reason
    assert reason == f"2 copies already run on local (limit 1); next slot when 2 of them finish (#{a.pk}, #{b.pk} are furthest)"


def test_a_network_destination_counts_against_the_host_only(make, host):
    host.max_copies = 3
    host.root_limits = {ROOT_A: {"max_copies": 1, "bandwidth_mib": 0}}
    host.save()
    make(State.COPYING, root=ROOT_A)
    nbd = make(State.PREFLIGHT, root="nbd://10.0.0.5:10809")
    assert rules.slot_for(nbd) is None


def test_another_condition_can_be_added_to_the_rule(make, monkeypatch):
    """The contract for other rules (a paused plan, a maintenance window): one function more."""
    monkeypatch.setattr(rules, "CONDITIONS", [*rules.CONDITIONS, lambda me, usage, ahead: "the plan is paused"])
    wait = rules.slot_for(make(State.PREFLIGHT))
    assert wait.reason == "the plan is paused"


def test_a_migration_a_gate_holds_keeps_its_place_but_holds_back_no_one(make, host, monkeypatch):
    """A paused plan's queued copy (a gate's reason) must not reserve a seat at the limits."""
    host.max_copies = 1
    host.save()
    held = make(State.QUEUED)
    later = make(State.QUEUED, root=ROOT_B)
    monkeypatch.setattr(rules, "GATES", [lambda me, usage, ahead: "the plan is paused" if me.id == held.pk else None])
    assert rules.slot_for(fresh(held)).reason == "the plan is paused"
    assert rules.slot_for(fresh(later)) is None  # the one free slot goes to the later request
    assert rules.startable_queued() == [later.pk]
    make(State.COPYING)
    wait = rules.slot_for(fresh(later))
    assert wait.position == 2 and wait.reason.startswith("1 copy already runs on local (limit 1)")
