"""Evacuation plans through the API: the list, one plan with its disks and totals, and the
approval with the plan page's rules (four eyes, preflight again, only a draft)."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from blockmig.api.tokens import token_create
from blockmig.models import AuditEvent
from tests.plan_factories import GIB, add_migrations, make_plan


@pytest.fixture
def as_role(users):
    made = iter(range(100))

    def make(role: str) -> dict:
        return {"Authorization": f"Bearer {token_create(user=users[role], name=f'plans {next(made)}')[1]}"}

    return make


def get(headers: dict, url: str, **params):
    return Client().get(url, params, headers=headers)


def approve(headers: dict, pk: int):
    return Client().post(f"/api/v1/plans/{pk}/approve/", "{}", content_type="application/json", headers=headers)


def test_plans_listed_with_counts_and_filtered_by_state(users, as_role):
    draft = make_plan(users["operator"])
    make_plan(users["operator"], state="done", host=draft.hypervisor)
    viewer = as_role("viewer")
    body = get(viewer, "/api/v1/plans/").json()
    assert body["count"] == 2
    rows = get(viewer, "/api/v1/plans/", state="draft").json()["results"]
    assert [(r["id"], r["disk_count"], r["staying_count"], r["author"]) for r in rows] == [(draft.pk, 2, 1, "operator")]
    assert get(viewer, "/api/v1/plans/", state="nope").json()["error"]["code"] == "invalid"


def test_plan_detail_has_its_disks_and_totals(users, as_role):
    plan = make_plan(users["operator"], state="running")
    add_migrations(plan, ["copying", "completed"], done=GIB // 2)
    body = get(as_role("viewer"), f"/api/v1/plans/{plan.pk}/").json()
    assert body["state"] == "running" and body["target_root"] == "/new"
    staying = [d for d in body["disks"] if d["blocked_reason"]]
    assert len(body["disks"]) == 3 and staying[0]["status"] == "stays" and "shutoff" in staying[0]["blocked_reason"]
    assert body["totals"]["bytes_planned"] == 2 * GIB and body["totals"]["bytes_done"] > 0
    assert get(as_role("viewer"), "/api/v1/plans/999/").json()["error"] == {
        "code": "not_found",
        "message": "No plan #999.",
        "fields": {},
    }


def test_viewer_and_operator_may_not_approve(users, as_role):
    plan = make_plan(users["operator"])
    response = approve(as_role("viewer"), plan.pk)
    assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
    assert response.json()["error"]["message"] == "Only a user with the approver role can approve an evacuation plan."


def test_four_eyes_on_a_plan(users, as_role):
    plan = make_plan(users["approver"])
    response = approve(as_role("approver"), plan.pk)
    assert response.status_code == 403
    assert response.json()["error"] == {
        "code": "four_eyes",
        "message": "You built this plan, so another approver must approve it (four eyes).",
        "fields": {},
    }
    refused = AuditEvent.objects.get(event_type="refused", details__plan=plan.pk)
    assert refused.via.startswith("api token “plans ")


def test_only_a_draft_is_approved(users, as_role):
    plan = make_plan(users["operator"], state="running")
    response = approve(as_role("approver"), plan.pk)
    assert response.status_code == 409 and response.json()["error"]["code"] == "wrong_state"
    assert response.json()["error"]["message"] == f"Plan #{plan.pk} is running: only a draft can be approved."


def test_approval_preflights_again_and_an_unreachable_host_refuses(users, as_role):
    plan = make_plan(users["operator"])
    response = approve(as_role("approver"), plan.pk)
    assert response.status_code == 409 and response.json()["error"]["code"] == "refused"
    plan.refresh_from_db()
    assert plan.state == "draft"
    assert json.loads(response.content)["error"]["message"]


def post(headers: dict, url: str):
    return Client().post(url, "{}", content_type="application/json", headers=headers)


def test_an_operator_pauses_and_resumes_a_running_plan_through_the_api(users, as_role):
    plan = make_plan(users["operator"], state="running")
    add_migrations(plan, ["copying", "queued"], done=GIB // 2)
    operator = as_role("operator")
    paused = post(operator, f"/api/v1/plans/{plan.pk}/pause/")
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    again = post(operator, f"/api/v1/plans/{plan.pk}/pause/")
    assert again.status_code == 409 and again.json()["error"]["code"] == "wrong_state"
    assert again.json()["error"]["message"] == f"Plan #{plan.pk} is paused: only a running plan can be paused."
    assert post(operator, f"/api/v1/plans/{plan.pk}/resume/").json()["state"] == "running"
    assert list(AuditEvent.objects.filter(details__plan=plan.pk).values_list("event_type", flat=True).order_by("id")) == [
        "plan_paused",
        "refused",
        "plan_resumed",
    ]


def test_a_viewer_may_not_pause_or_abort_a_plan(users, as_role):
    plan = make_plan(users["operator"], state="running")
    viewer = as_role("viewer")
    for action, role in (("pause", "operator"), ("resume", "operator"), ("abort", "operator or approver")):
        response = post(viewer, f"/api/v1/plans/{plan.pk}/{action}/")
        assert response.status_code == 403 and response.json()["error"]["code"] == "permission_denied"
        assert f"You need the {role} role" in response.json()["error"]["message"]
    assert AuditEvent.objects.filter(event_type="refused", details__plan=plan.pk).count() == 3  # audited, as on the page
    plan.refresh_from_db()
    assert plan.state == "running"


def test_aborting_a_plan_through_the_api_aborts_its_migrations_that_have_not_started(users, as_role):
    plan = make_plan(users["operator"], state="running")
    queued, requested = add_migrations(plan, ["queued", "requested"])
    body = post(as_role("approver"), f"/api/v1/plans/{plan.pk}/abort/").json()
    assert body["state"] == "aborted"  # nothing had started on the host: every migration ended at once
    queued.refresh_from_db()
    requested.refresh_from_db()
    assert (queued.state, requested.state) == ("aborted", "aborted")
    assert post(as_role("approver"), f"/api/v1/plans/{plan.pk}/abort/").json()["error"]["code"] == "wrong_state"
