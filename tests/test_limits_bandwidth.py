"""A root's bandwidth total shared among the copies running into it (rules.bandwidth_for);
without a total each copy keeps its own limit."""

from __future__ import annotations

from blockmig.limits import rules
from blockmig.states import State
from tests.limits_fixtures import ROOT_A, ROOT_B, fresh, host, make


def test_a_roots_total_is_shared_among_its_running_copies(make, host):
    host.max_copies = 5
    host.root_limits = {ROOT_A: {"max_copies": 5, "bandwidth_mib": 100}}
    host.save()
    a = make(State.COPYING, bandwidth_mib=0)
    b = make(State.COPYING, bandwidth_mib=30)
    c = make(State.COPYING, root=ROOT_B, bandwidth_mib=0)
    assert rules.bandwidth_for(fresh(a), list(a.disks.all())) == {"vda": 50}
    assert rules.bandwidth_for(fresh(b), list(b.disks.all())) == {"vda": 30}  # its own limit is lower
    assert rules.bandwidth_for(fresh(c), list(c.disks.all())) == {"vda": 0}  # no total on that root
    make(State.COPYING, targets=("vda", "vdb"))  # two more copies into the root
    assert rules.bandwidth_for(fresh(a), list(a.disks.all())) == {"vda": 25}


def test_without_a_total_each_copy_keeps_its_own_limit(make):
    m = make(State.COPYING, bandwidth_mib=7, targets=("vda", "vdb"))
    assert rules.bandwidth_for(fresh(m), list(m.disks.all())) == {"vda": 7, "vdb": 7}
