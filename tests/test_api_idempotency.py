"""Idempotency-Key: a POST with a key is carried out once per (user, key), however often it
is retried, even when two copies arrive at the same moment (the database's unique
constraint decides which one runs)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from blockmig.api.models import IdempotencyRecord
from blockmig.api.tokens import token_create
from blockmig.models import AuditEvent, Migration
from blockmig.states import State
from hosts.models import Hypervisor


def post(token: str, url: str, body: dict, key: str | None = "k-1"):
    headers = {"Authorization": f"Bearer {token}", **({"Idempotency-Key": key} if key else {})}
    return Client().post(url, json.dumps(body), content_type="application/json", headers=headers)


@pytest.fixture
def setup(users):
    host = Hypervisor.objects.create(name="kvm01", uri="qemu+tcp://unreachable.invalid/system", allowed_roots=["/backups"])

    def migration(state=State.COPYING) -> Migration:
        return Migration.objects.create(
            hypervisor=host, domain_uuid="u", domain_name="vm", state=state, requested_by=users["operator"]
        )

    tokens = {role: token_create(user=users[role], name="t")[1] for role in ("operator", "approver")}
    return migration, tokens


def test_retry_gets_the_same_response_and_changes_nothing_more(setup):
    migration, tokens = setup
    m = migration()
    url = f"/api/v1/migrations/{m.pk}/bandwidth/"
    first = post(tokens["operator"], url, {"bandwidth_mib": 40})
    # Someone changes it meanwhile; the retry must not set it back.
    Migration.objects.filter(pk=m.pk).update(bandwidth_mib=7)
    retry = post(tokens["operator"], url, {"bandwidth_mib": 40})
    assert first.status_code == retry.status_code == 200
    assert retry.json() == first.json() and retry["Idempotent-Replayed"] == "true"
    m.refresh_from_db()
    assert m.bandwidth_mib == 7
    assert AuditEvent.objects.filter(migration=m, event_type="bandwidth_changed").count() == 1


def test_same_key_different_body_is_422(setup):
    migration, tokens = setup
    m = migration()
    url = f"/api/v1/migrations/{m.pk}/bandwidth/"
    assert post(tokens["operator"], url, {"bandwidth_mib": 40}).status_code == 200
    response = post(tokens["operator"], url, {"bandwidth_mib": 41})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert "“k-1” was already used for a different request" in response.json()["error"]["message"]
    other_url = post(tokens["operator"], f"/api/v1/migrations/{m.pk}/abort/", {})
    assert other_url.status_code == 422


def test_keys_belong_to_their_user(setup):
    migration, tokens = setup
    m = migration(State.READY)
    assert post(tokens["operator"], f"/api/v1/migrations/{m.pk}/bandwidth/", {"bandwidth_mib": 1}).status_code == 200
    # The approver's k-1 is a different key: its own request runs.
    assert post(tokens["approver"], f"/api/v1/migrations/{m.pk}/approve/", {}).json()["state"] == "pivoting"


def test_a_refusal_is_stored_too(setup):
    migration, tokens = setup
    m = migration(State.COPYING)
    first = post(tokens["approver"], f"/api/v1/migrations/{m.pk}/approve/", {})
    Migration.objects.filter(pk=m.pk).update(state=State.READY)
    retry = post(tokens["approver"], f"/api/v1/migrations/{m.pk}/approve/", {})
    assert first.status_code == retry.status_code == 409 and retry.json() == first.json()
    assert AuditEvent.objects.filter(migration=m, event_type="refused").count() == 1
    m.refresh_from_db()
    assert m.state == State.READY


def test_without_a_key_each_post_runs(setup):
    migration, tokens = setup
    m = migration()
    for value in (3, 3):
        post(tokens["operator"], f"/api/v1/migrations/{m.pk}/bandwidth/", {"bandwidth_mib": value}, key=None)
    assert AuditEvent.objects.filter(migration=m, event_type="bandwidth_changed").count() == 2
    assert IdempotencyRecord.objects.count() == 0


def test_expired_records_of_every_user_are_purged_and_a_key_can_be_used_again(setup, users, settings):
    migration, tokens = setup
    m = migration()
    url = f"/api/v1/migrations/{m.pk}/bandwidth/"
    assert post(tokens["operator"], url, {"bandwidth_mib": 40}, key="old").status_code == 200
    assert post(tokens["approver"], url, {"bandwidth_mib": 41}, key="idle").status_code == 403  # stored like a success
    past = timezone.now() - timedelta(hours=settings.BLOCKMIG_API_IDEMPOTENCY_HOURS, minutes=1)
    IdempotencyRecord.objects.update(created_at=past)
    assert post(tokens["operator"], url, {"bandwidth_mib": 42}, key="new").status_code == 200
    # The approver's expired record went too, though the approver never called again.
    assert sorted(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]
    # An expired key is free again: the same key with another body runs instead of a 422.
    assert post(tokens["operator"], url, {"bandwidth_mib": 43}, key="old").status_code == 200
    m.refresh_from_db()
    assert m.bandwidth_mib == 43


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_requests_with_one_key_run_once(users):
    host = Hypervisor.objects.create(name="kvm01", uri="qemu+tcp://unreachable.invalid/system", allowed_roots=["/backups"])
    m = Migration.objects.create(
        hypervisor=host, domain_uuid="u", domain_name="vm", state=State.READY, requested_by=users["operator"]
    )
    _, token = token_create(user=users["approver"], name="t")
    start = threading.Barrier(2)
    responses = []

    def send():
        try:
            start.wait()
            responses.append(post(token, f"/api/v1/migrations/{m.pk}/approve/", {}, key="approve-once"))
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [r.status_code for r in responses] == [200, 200], [r.content for r in responses]
    assert responses[0].json() == responses[1].json()
    assert sorted(r.get("Idempotent-Replayed", "") for r in responses) == ["", "true"]
    assert AuditEvent.objects.filter(migration=m, event_type="approved").count() == 1
    assert AuditEvent.objects.filter(migration=m, event_type="refused").count() == 0
    assert IdempotencyRecord.objects.get().status == 200
