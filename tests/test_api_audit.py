"""The REST API's audit trail: filtered as on the page, paged with a cursor, and what came
through a token marked as such on the audit page."""

from __future__ import annotations

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from blockmig.models import AuditEvent
from blockmig.states import State
from tests.api_fixtures import api, error, host, make


def test_audit_filters_as_on_the_page_with_a_cursor(api, make, users):
    m = make(State.COPYING)
    base = timezone.now() - timedelta(hours=2)
    for i in range(5):
        AuditEvent.objects.create(event_type="copying", migration=m, actor_name="blockmig", hypervisor_name="kvm01",
                                  domain_name="testvm", to_state="copying", created_at=base + timedelta(minutes=i))  # fmt: skip
    AuditEvent.objects.create(event_type="approved", actor=users["approver"], actor_name="approver", hypervisor_name="other")
    viewer = api("viewer")
    first = viewer.get("/api/v1/audit/", host="kvm01", page_size=2).json()
    assert [e["created_at"] for e in first["results"]] == sorted((e["created_at"] for e in first["results"]), reverse=True)
    assert len(first["results"]) == 2 and first["next"]
    second = viewer.client.get(first["next"], headers=viewer.headers).json()
    third = viewer.client.get(second["next"], headers=viewer.headers).json()
    ids = [e["id"] for page in (first, second, third) for e in page["results"]]
    assert len(ids) == len(set(ids)) == 5 and third["next"] is None
    assert all(e["system"] and e["actor"] == "blockmig" for e in third["results"])
    assert [e["event_type"] for e in viewer.get("/api/v1/audit/", user="approver").json()["results"]] == ["approved"]
    since = (base + timedelta(minutes=3, seconds=30)).isoformat()
    assert len(viewer.get("/api/v1/audit/", host="kvm01", since=since).json()["results"]) == 1
    err = error(viewer.get("/api/v1/audit/", since="yesterday-ish"))
    assert err["code"] == "invalid" and "since" in err["fields"]


def test_the_audit_page_shows_what_came_through_a_token(api, client_for, make):
    m = make(State.READY)
    api("approver", name="nightly").post(f"/api/v1/migrations/{m.pk}/approve/")
    html = client_for("viewer").get(reverse("audit_list")).content.decode()
    assert "via api token “nightly-approver" in html
