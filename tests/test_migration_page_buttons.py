"""Which buttons the migration page shows whom, per role and state, and the one rule behind
them: every button shown works through the real lifecycle, every action hidden is refused."""

import pytest

from blockmig.states import State
from tests.migration_page_fixtures import buttons, host, make, page


def test_viewer_sees_no_buttons(client_for, make):
    for state in (State.COPYING, State.READY):
        m = make(state)
        html = page(client_for("viewer"), m)
        assert buttons(html, m) == set()
        assert "acting on it needs the operator or approver role" in html


def test_requester_sees_abort_and_bandwidth_but_no_approve(client_for, make):
    m = make(State.READY, requested_by="operator")
    assert buttons(page(client_for("operator"), m), m) == {"abort", "bandwidth"}


def test_approver_sees_approve_and_abort_on_ready(client_for, make):
    m = make(State.READY)
    html = page(client_for("approver"), m)
    assert buttons(html, m) == {"approve", "abort"}
    assert "Approve and pivot" in html


def test_approver_sees_no_approve_while_copying(client_for, make):
    m = make(State.COPYING)
    assert buttons(page(client_for("approver"), m), m) == {"abort"}


def test_approver_who_requested_sees_no_approve_and_why(client_for, make):
    m = make(State.READY, requested_by="admin")
    html = page(client_for("admin"), m)
    assert "approve" not in buttons(html, m)
    assert "another approver must approve its pivot" in html


def test_nobody_gets_buttons_after_the_pivot(client_for, make):
    for state in (State.PIVOTING, State.COMPLETED, State.FAILED, State.ABORTED):
        m = make(state)
        for role in ("operator", "approver", "admin"):
            assert buttons(page(client_for(role), m), m) == set(), (state, role)


@pytest.mark.parametrize("state", list(State))
def test_the_page_offers_exactly_what_the_lifecycle_accepts(client_for, make, users, state):
    """One rule: every button the page shows works, and every action it hides is refused."""
    from blockmig import lifecycle
    from blockmig.errors import Refused

    admin = users["admin"]  # holds every permission and did not request these
    shown = make(state)
    offered = buttons(page(client_for("admin"), shown), shown)
    actions = {
        "approve": lambda m: lifecycle.migration_approve(migration=m, user=admin),
        "abort": lambda m: lifecycle.migration_abort(migration=m, user=admin),
        "bandwidth": lambda m: lifecycle.migration_set_bandwidth(migration=m, user=admin, bandwidth_mib=5),
    }
    accepted = set()
    for name, act in actions.items():
        try:
            act(make(state))
        except Refused:
            continue
        accepted.add(name)
    assert offered == accepted
