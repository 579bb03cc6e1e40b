"""The REST API's migrations: the list and the detail (progress, disks, timeline, what you may
do), and approve, abort and bandwidth with the lifecycle's rules and messages (four eyes,
roles, states), the audit naming the token."""

from __future__ import annotations

import pytest

from blockmig.models import AuditEvent
from blockmig.states import State
from tests.api_fixtures import GIB, api, error, host, make


def test_migration_list_filters_by_state_and_shows_progress(api, make):
    copying = make(State.COPYING, bytes_done=GIB // 2, bytes_total=GIB, rate_bps=64 * 2**20)
    make(State.COMPLETED)
    viewer = api("viewer")
    rows = viewer.get("/api/v1/migrations/", state="copying").json()["results"]
    assert [r["id"] for r in rows] == [copying.pk]
    progress = rows[0]["progress"]
    assert progress["percent"] == 50.0 and progress["eta_seconds"] == 8.0 and "64.0 MiB/s" in progress["text"]
    assert viewer.get("/api/v1/migrations/", active="true").json()["count"] == 1
    assert viewer.get("/api/v1/migrations/").json()["count"] == 2
    err = error(viewer.get("/api/v1/migrations/", state="sleeping"))
    assert err["code"] == "invalid" and "sleeping" in err["message"]


def test_migration_detail_has_disks_timeline_and_what_you_may_do(api, make, users):
    m = make(State.READY)
    AuditEvent.objects.create(
        event_type="requested", migration=m, actor=users["operator"], actor_name="operator", to_state="requested"
    )
    body = api("approver").get(f"/api/v1/migrations/{m.pk}/").json()
    assert body["state"] == "ready" and body["phase"] == "Ready — awaiting approval"
    assert body["disks"][0]["source_chain_text"] == "/images/base.qcow2 ← /images/snap1.qcow2 ← /images/snap2.qcow2"
    assert [e["event_type"] for e in body["events"]] == ["requested"]
    assert body["actions"] == {"approve": True, "abort": True, "bandwidth": False, "approve_note": ""}
    assert api("viewer").get(f"/api/v1/migrations/{m.pk}/").json()["actions"]["approve"] is False


def test_approver_approves_through_the_api_and_the_audit_names_the_token(api, make, users):
    m = make(State.READY)
    response = api("approver", name="pipeline").post(f"/api/v1/migrations/{m.pk}/approve/")
    assert response.status_code == 200, response.content
    assert response.json()["state"] == "pivoting" and response.json()["approved_by"] == "approver"
    event = AuditEvent.objects.get(migration=m, event_type="approved")
    assert event.actor == users["approver"] and event.via.startswith("api token “pipeline-approver")


def test_four_eyes_through_the_api(api, make):
    m = make(State.READY, requested_by="approver")
    response = api("approver").post(f"/api/v1/migrations/{m.pk}/approve/")
    assert response.status_code == 403
    err = error(response)
    assert err["code"] == "four_eyes"
    assert err["message"] == "You requested this migration, so another approver must approve it (four eyes)."
    m.refresh_from_db()
    assert m.state == State.READY
    refused = AuditEvent.objects.get(migration=m, event_type="refused")
    assert refused.details["action"] == "approve" and refused.via.startswith("api token")


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_approve_without_the_role_is_403_with_the_lifecycles_message(api, make, role):
    m = make(State.READY)
    err = error(response := api(role).post(f"/api/v1/migrations/{m.pk}/approve/"))
    assert response.status_code == 403 and err["code"] == "permission_denied"
    assert err["message"] == "Only a user with the approver role can approve a pivot."
    assert AuditEvent.objects.filter(migration=m, event_type="refused").count() == 1


def test_approve_before_ready_is_409_wrong_state(api, make):
    m = make(State.COPYING)
    err = error(response := api("approver").post(f"/api/v1/migrations/{m.pk}/approve/"))
    assert response.status_code == 409 and err["code"] == "wrong_state"
    assert err["message"] == f"Migration #{m.pk} is copying: a pivot can be approved only once every disk's mirror is ready."


def test_admin_may_approve_what_an_operator_requested(api, make):
    m = make(State.READY)
    assert api("admin").post(f"/api/v1/migrations/{m.pk}/approve/").json()["state"] == "pivoting"


@pytest.mark.parametrize(("state", "after"), [(State.REQUESTED, "aborted"), (State.COPYING, "aborting")])
def test_operator_aborts(api, make, state, after):
    m = make(state)
    response = api("operator").post(f"/api/v1/migrations/{m.pk}/abort/")
    assert response.status_code == 200 and response.json()["state"] == after


def test_abort_refusals(api, make):
    m = make(State.COPYING)
    err = error(response := api("viewer").post(f"/api/v1/migrations/{m.pk}/abort/"))
    assert response.status_code == 403 and err["message"] == "You need the operator or approver role to abort a migration."
    done = make(State.COMPLETED)
    err = error(response := api("operator").post(f"/api/v1/migrations/{done.pk}/abort/"))
    assert (
        response.status_code == 409 and err["code"] == "wrong_state" and "only a migration that has not pivoted" in err["message"]
    )


def test_bandwidth_change_and_its_refusals(api, make):
    m = make(State.COPYING)
    operator = api("operator")
    response = operator.post(f"/api/v1/migrations/{m.pk}/bandwidth/", {"bandwidth_mib": 50})
    assert response.status_code == 200 and response.json()["bandwidth_mib"] == 50
    assert AuditEvent.objects.get(migration=m, event_type="bandwidth_changed").details == {"from_mib": 0, "to_mib": 50}

    err = error(response := operator.post(f"/api/v1/migrations/{m.pk}/bandwidth/", {"bandwidth_mib": -1}))
    assert response.status_code == 400 and err["code"] == "invalid"
    assert err["fields"] == {"bandwidth_mib": ["Bandwidth cannot be negative; use 0 for unlimited."]}

    err = error(response := api("viewer").post(f"/api/v1/migrations/{m.pk}/bandwidth/", {"bandwidth_mib": 5}))
    assert response.status_code == 403 and err["code"] == "permission_denied"

    pivoting = make(State.PIVOTING)
    err = error(response := operator.post(f"/api/v1/migrations/{pivoting.pk}/bandwidth/", {"bandwidth_mib": 5}))
    assert response.status_code == 409 and err["code"] == "wrong_state" and "only before the pivot" in err["message"]
