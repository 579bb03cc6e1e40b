"""The migration page's bandwidth POST, through the real lifecycle: the limit recorded (the
worker applies it, so no host is needed), audited; bad values and a change after the
approval refused with a message and audited."""

import pytest

from blockmig.states import State
from tests.migration_page_fixtures import action_urls, host, make


def test_negative_bandwidth_refused_with_a_message(client_for, make):
    m = make(State.COPYING, bandwidth_mib=10)
    response = client_for("operator").post(action_urls(m)["bandwidth"], {"bandwidth_mib": "-3"}, follow=True)
    assert "Bandwidth cannot be negative; use 0 for unlimited." in response.content.decode()
    m.refresh_from_db()
    assert m.bandwidth_mib == 10


@pytest.mark.parametrize("value", ["-3", "abc", "2.5", "", "99999999999999999999"])
def test_invalid_bandwidth_attempt_is_audited_with_the_user_and_the_reason(client_for, make, value):
    m = make(State.COPYING, bandwidth_mib=10)
    client_for("operator").post(action_urls(m)["bandwidth"], {"bandwidth_mib": value})
    refusal = m.events.get(event_type="refused")
    assert refusal.actor_name == "operator" and refusal.details["action"] == "set_bandwidth"
    assert "Bandwidth" in refusal.details["reason"]


def test_bandwidth_set_before_the_copy_starts(client_for, make):
    # In "requested" no block job exists yet, so no host is needed.
    m = make(State.REQUESTED, bandwidth_mib=0)
    response = client_for("operator").post(action_urls(m)["bandwidth"], {"bandwidth_mib": "25"}, follow=True)
    assert "Bandwidth limit set to 25 MiB/s." in response.content.decode()
    m.refresh_from_db()
    assert m.bandwidth_mib == 25
    assert m.events.filter(event_type="bandwidth_changed").exists()


def test_bandwidth_change_while_copying_is_recorded_without_a_host(client_for, make):
    """The request only records the limit (the worker applies it): the remote host in this
    fixture is unreachable, and the change still lands, audited."""
    m = make(State.COPYING, bandwidth_mib=10)
    response = client_for("operator").post(action_urls(m)["bandwidth"], {"bandwidth_mib": "40"}, follow=True)
    assert "Bandwidth limit set to 40 MiB/s." in response.content.decode()
    m.refresh_from_db()
    assert m.bandwidth_mib == 40
    event = m.events.get(event_type="bandwidth_changed")
    assert (event.details, event.to_state) == ({"from_mib": 10, "to_mib": 40}, State.COPYING)


@pytest.mark.parametrize("value", ["100000000000000", "100000000000000000000"])
def test_huge_bandwidth_refused_with_a_message_not_an_error_page(client_for, make, value):
    m = make(State.COPYING, bandwidth_mib=10)
    response = client_for("operator").post(action_urls(m)["bandwidth"], {"bandwidth_mib": value}, follow=True)
    assert response.status_code == 200
    assert "Bandwidth can be at most 2147483647 MiB/s" in response.content.decode()
    m.refresh_from_db()
    assert m.bandwidth_mib == 10


def test_bandwidth_change_after_the_approval_is_refused_with_the_true_state(client_for, make):
    m = make(State.PIVOTING, bandwidth_mib=10)
    response = client_for("operator").post(action_urls(m)["bandwidth"], {"bandwidth_mib": "40"}, follow=True)
    assert "is pivoting: bandwidth can change only before the pivot" in response.content.decode()
    m.refresh_from_db()
    assert m.bandwidth_mib == 10
    refusal = m.events.get(event_type="refused")
    assert (refusal.from_state, refusal.details["action"]) == (State.PIVOTING, "set_bandwidth")
