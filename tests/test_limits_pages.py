"""A queued migration's place and reason on the migration page, the dashboard and the list,
and in the REST API (the rule's own answer)."""

from __future__ import annotations

from django.test import Client
from django.urls import reverse

from blockmig.api.tokens import token_create
from blockmig.limits import rules
from blockmig.states import State
from tests.limits_fixtures import fresh, host, make


def test_migration_page_and_dashboard_show_the_queue_position_and_reason(make, client_for):
    make(State.COPYING)
    busy = make(State.COPYING, bytes_done=50, bytes_total=100)
    queued = make(State.QUEUED)
    client = client_for("viewer")
    page = client.get(reverse("migration_detail", args=[queued.pk])).content.decode()
    assert "Queued — waiting for a copy slot" in page
    assert f"1st in the queue: 2 copies already run on local (limit 2); next slot when #{busy.pk} finishes" in page
    dashboard = client.get(reverse("dashboard")).content.decode()
    assert f'id="dashboard-queue-{queued.pk}"' in dashboard
    assert f"next slot when #{busy.pk} finishes" in dashboard
    listing = client.get(reverse("migration_list") + "?state=queued").content.decode()
    assert f"1st in the queue: 2 copies already run on local (limit 2); next slot when #{busy.pk} finishes" in listing


def test_the_api_gives_a_queued_migration_its_place_and_reason_and_others_none(make, users):
    make(State.COPYING)
    busy = make(State.COPYING, bytes_done=50, bytes_total=100)
    first, second = make(State.QUEUED), make(State.QUEUED)
    _, token = token_create(user=users["viewer"], name="queue-watcher")
    headers = {"Authorization": f"Bearer {token}"}
    detail = Client().get(f"/api/v1/migrations/{second.pk}/", headers=headers).json()
    assert detail["state"] == "queued"
    assert detail["queue"]["position"] == 2
    assert detail["queue"]["reason"] == f"2 copies already run on local (limit 2); next slot when #{busy.pk} finishes"
    assert detail["queue"]["waits_for"] == list(rules.slot_for(fresh(second)).behind) != []  # the rule's own answer
    rows = Client().get("/api/v1/migrations/", headers=headers).json()["results"]
    queues = {row["id"]: row["queue"] for row in rows}
    assert queues[first.pk]["position"] == 1
    assert queues[busy.pk] is None
