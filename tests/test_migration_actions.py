"""The migration page's approve and abort POSTs, through the real lifecycle functions (they
move the state machine only): who may, four eyes, the state they need, refusals as messages."""

from blockmig.states import State
from tests.migration_page_fixtures import action_urls, host, make


def test_viewer_cannot_approve_abort_or_set_bandwidth(client_for, make):
    m = make(State.READY, bandwidth_mib=10)
    client = client_for("viewer")
    for name, url in action_urls(m).items():
        response = client.post(url, {"bandwidth_mib": "99"})
        assert response.status_code == 403, name
    m.refresh_from_db()
    assert (m.state, m.approved_by, m.bandwidth_mib) == (State.READY, None, 10)


def test_operator_cannot_approve(client_for, make):
    m = make(State.READY, requested_by="admin")
    response = client_for("operator").post(action_urls(m)["approve"])
    assert response.status_code == 403 and "approver role" in response.content.decode()
    m.refresh_from_db()
    assert m.state == State.READY and m.approved_by is None


def test_approver_cannot_change_bandwidth(client_for, make):
    m = make(State.COPYING, bandwidth_mib=10)
    assert client_for("approver").post(action_urls(m)["bandwidth"], {"bandwidth_mib": "50"}).status_code == 403
    m.refresh_from_db()
    assert m.bandwidth_mib == 10


def test_self_approval_refused_with_a_message(client_for, make):
    m = make(State.READY, requested_by="admin")
    response = client_for("admin").post(action_urls(m)["approve"], follow=True)
    assert "another approver must approve it (four eyes)" in response.content.decode()
    m.refresh_from_db()
    assert m.state == State.READY and m.approved_by is None


def test_approve_while_copying_refused_with_a_message(client_for, make):
    m = make(State.COPYING)
    response = client_for("approver").post(action_urls(m)["approve"], follow=True)
    assert "can be approved only once every disk" in response.content.decode()
    m.refresh_from_db()
    assert m.state == State.COPYING


def test_approver_approves_a_ready_migration(client_for, users, make):
    m = make(State.READY)
    response = client_for("approver").post(action_urls(m)["approve"], follow=True)
    assert "Approved: the pivot follows now." in response.content.decode()
    m.refresh_from_db()
    assert m.state == State.PIVOTING and m.approved_by == users["approver"]
    assert m.events.filter(event_type="approved", actor=users["approver"]).exists()


def test_operator_aborts_a_copying_migration(client_for, make):
    m = make(State.COPYING)
    client_for("operator").post(action_urls(m)["abort"])
    m.refresh_from_db()
    assert m.state == State.ABORTING


def test_abort_after_completion_refused(client_for, make):
    m = make(State.COMPLETED)
    response = client_for("operator").post(action_urls(m)["abort"], follow=True)
    assert "only a migration that has not pivoted yet can be aborted" in response.content.decode()
    m.refresh_from_db()
    assert m.state == State.COMPLETED


def test_actions_need_post(client_for, make):
    m = make(State.READY)
    assert client_for("approver").get(action_urls(m)["approve"]).status_code == 405
