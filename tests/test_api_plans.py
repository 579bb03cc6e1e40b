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
