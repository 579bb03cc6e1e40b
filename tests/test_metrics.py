"""/metrics: scraped like Prometheus does and parsed with prometheus_client's own parser;
figures come from the database and Redis at scrape time; access by token or allow-list."""

from __future__ import annotations

import copy
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from blockmig.health import WorkerHeartbeat
from blockmig.live.publish import redis_client
from blockmig.metrics import (
    bucket_index,
    histogram_of,
    slots_key,  # wherever the live console keeps it
)
from blockmig.models import AuditEvent, Migration
from blockmig.notify.models import Delivery, Notification
from blockmig.states import State
from hosts.models import Hypervisor
from hosts.sync.hypervisor import hypervisor_sync

GIB = 1024**3


@pytest.fixture
def redis_prefix(settings):
    """Keys of this test only (the Redis is shared with other test runs), removed afterwards."""
    prefix = f"test-metrics-{uuid.uuid4().hex[:8]}"
    layers = copy.deepcopy(django_settings.CHANNEL_LAYERS)
    layers["default"].setdefault("CONFIG", {})["prefix"] = prefix
    settings.CHANNEL_LAYERS = layers
    yield prefix
    client = redis_client()
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


def scrape(client: Client | None = None, **extra) -> dict[str, list]:
    """metric family name → its samples, as prometheus_client parses the page."""
    response = (client or Client()).get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {family.name: family.samples for family in text_string_to_metric_families(response.content.decode())}


def value(samples, name: str, **labels) -> float:
    found = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{name} {labels}: {found}"
    return found[0]


@pytest.fixture
def host(db):
    return Hypervisor.objects.create(name="kvm01", uri="test:///default", allowed_roots=["/b"])


def event(m, event_type, from_state, to_state, at):
    return AuditEvent.objects.create(
        event_type=event_type,
        migration=m,
        hypervisor_name=m.hypervisor.name,
        domain_name=m.domain_name,
        from_state=from_state,
        to_state=to_state,
        created_at=at,
    )


def test_histogram_buckets_are_cumulative_with_inf_last():
    assert bucket_index(0.5, (1.0, 2.0)) == 0 and bucket_index(1.5, (1.0, 2.0)) == 1 and bucket_index(9, (1.0, 2.0)) == 2
    buckets, total = histogram_of([0.5, 1.5, 9.0], (1.0, 2.0))
    assert buckets == [("1.0", 1), ("2.0", 2), ("+Inf", 3)] and total == 11.0


def test_migrations_copies_approvals_pivots_and_leases(host, users, redis_prefix):
    now = timezone.now()
    copying = Migration.objects.create(
        hypervisor=host, domain_uuid="u1", domain_name="vm1", state=State.COPYING, requested_by=users["operator"],
        bytes_done=GIB // 4, bytes_total=GIB, rate_bps=50 * 1024**2,
        lease_owner="worker-a", lease_epoch=1, lease_expires_at=now + timedelta(seconds=30),
    )  # fmt: skip
    Migration.objects.create(
        hypervisor=host, domain_uuid="u2", domain_name="vm2", state=State.READY, requested_by=users["operator"],
        lease_owner="worker-a", lease_epoch=1, lease_expires_at=now + timedelta(seconds=30),
    )  # fmt: skip
    Migration.objects.create(  # a lease that ran out is held by nobody
        hypervisor=host, domain_uuid="u3", domain_name="vm3", state=State.COPYING, requested_by=users["operator"],
        lease_owner="worker-dead", lease_epoch=1, lease_expires_at=now - timedelta(seconds=30),
    )  # fmt: skip
    done = Migration.objects.create(
        hypervisor=host, domain_uuid="u4", domain_name="vm4", state=State.COMPLETED, requested_by=users["operator"],
        ready_at=now - timedelta(minutes=10),
    )  # fmt: skip
    event(done, "approved", "ready", "pivoting", now - timedelta(minutes=10) + timedelta(seconds=600))
    event(done, "verified", "pivoting", "pivoting", now + timedelta(seconds=2))
    event(done, "completed", "pivoting", "completed", now + timedelta(seconds=3))

    families = scrape()

    assert value(families["blockmig_migrations"], "blockmig_migrations", state="copying") == 2
    assert value(families["blockmig_migrations"], "blockmig_migrations", state="ready") == 1
    assert value(families["blockmig_migrations"], "blockmig_migrations", state="failed") == 0
    copy_bytes = families["blockmig_migration_copy_bytes"]
    assert value(copy_bytes, "blockmig_migration_copy_bytes", migration=str(copying.pk), host="kvm01", domain="vm1") == GIB // 4
    rate = families["blockmig_migration_copy_rate_bytes_per_second"]
    assert value(rate, "blockmig_migration_copy_rate_bytes_per_second", migration=str(copying.pk)) == 50 * 1024**2
    assert str(done.pk) not in {s.labels["migration"] for s in copy_bytes}  # only active ones

    wait = families["blockmig_approval_wait_seconds"]
    assert value(wait, "blockmig_approval_wait_seconds_count", by="person") == 1
    assert value(wait, "blockmig_approval_wait_seconds_sum", by="person") == pytest.approx(600, abs=1)
    assert value(wait, "blockmig_approval_wait_seconds_bucket", by="person", le="300.0") == 0
    assert value(wait, "blockmig_approval_wait_seconds_bucket", by="person", le="900.0") == 1
    pivots = families["blockmig_pivot_duration_seconds"]
    assert value(pivots, "blockmig_pivot_duration_seconds_count", outcome="completed") == 1
    assert value(pivots, "blockmig_pivot_duration_seconds_bucket", outcome="completed", le="2.0") == 0
    assert value(pivots, "blockmig_pivot_duration_seconds_bucket", outcome="completed", le="5.0") == 1

    leases = families["blockmig_worker_leases"]
    assert value(leases, "blockmig_worker_leases", worker="worker-a") == 2
    assert "worker-dead" not in {s.labels["worker"] for s in leases}


def test_syncs_deliveries_workers_and_websockets(host, users, redis_prefix):
    assert hypervisor_sync(host).ok  # a real sync on libvirt's test driver
    Hypervisor.objects.create(name="gone", uri="test:///default", enabled=True)
    gone = Hypervisor.objects.get(name="gone")
    Hypervisor.objects.filter(pk=gone.pk).update(enabled=False)
    assert not hypervisor_sync(gone).ok  # refused: disabled, counted as an error
    m = Migration.objects.create(hypervisor=host, domain_uuid="u1", domain_name="vm1", requested_by=users["operator"])
    notification = Notification.objects.create(event="failed", migration=m, payload={}, subject="s", text="t")
    Delivery.objects.create(notification=notification, channel="webhook", recipient="http://x", status="failed")
    Delivery.objects.create(notification=notification, channel="email", recipient="a@x", status="sent")
    WorkerHeartbeat("worker-a").beat()
    WorkerHeartbeat("worker-b").beat()
    client = redis_client()
    client.zadd(slots_key("7"), {"daphne-1:a": time.time() + 60, "daphne-2:b": time.time() + 60})
    client.zadd(slots_key("8"), {"daphne-1:c": time.time() + 60, "daphne-1:lapsed": time.time() - 60})

    families = scrape()

    syncs = families["blockmig_host_sync_duration_seconds"]
    assert value(syncs, "blockmig_host_sync_duration_seconds_count", host="kvm01") == 1
    assert value(syncs, "blockmig_host_sync_duration_seconds_sum", host="kvm01") > 0
    errors = families["blockmig_host_sync_errors"]
    assert value(errors, "blockmig_host_sync_errors_total", host="kvm01") == 0
    assert value(errors, "blockmig_host_sync_errors_total", host="gone") == 1
    assert value(families["blockmig_host_sync_failing"], "blockmig_host_sync_failing", host="kvm01") == 0
    deliveries = families["blockmig_notification_deliveries"]
    assert value(deliveries, "blockmig_notification_deliveries", channel="webhook", status="failed") == 1
    assert value(deliveries, "blockmig_notification_deliveries", channel="email", status="sent") == 1
    assert value(families["blockmig_workers_alive"], "blockmig_workers_alive") == 2
    assert value(families["blockmig_websocket_clients"], "blockmig_websocket_clients") == 3  # the lapsed one is out
    assert value(families["blockmig_redis_up"], "blockmig_redis_up") == 1


def test_a_remote_address_outside_the_allow_list_is_refused(db):
    response = Client().get("/metrics", REMOTE_ADDR="192.0.2.7")
    assert response.status_code == 403
    assert "METRICS_ALLOW" in response.content.decode()


def test_the_allow_list_takes_networks(db, settings, redis_prefix):
    settings.METRICS_ALLOW = ["192.0.2.0/24"]
    assert "blockmig_migrations" in scrape(REMOTE_ADDR="192.0.2.7")
    assert Client().get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403  # localhost is no longer listed


def test_a_token_lets_a_remote_scraper_in_and_a_wrong_one_is_refused(db, settings, redis_prefix):
    settings.METRICS_TOKEN = "scrape-token-123"
    missing = Client().get("/metrics", REMOTE_ADDR="192.0.2.7")
    assert missing.status_code == 401 and missing["WWW-Authenticate"].startswith("Bearer")
    wrong = Client().get("/metrics", REMOTE_ADDR="192.0.2.7", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401
    assert "blockmig_migrations" in scrape(REMOTE_ADDR="192.0.2.7", HTTP_AUTHORIZATION="Bearer scrape-token-123")


def test_metrics_need_no_login_but_an_allowed_address(db, redis_prefix):
    response = Client().get("/metrics")  # the test client comes from 127.0.0.1
    assert response.status_code == 200


def test_a_deleted_hosts_sync_series_go_away(host, users, redis_prefix, django_capture_on_commit_callbacks):
    from hosts.signals import announce_hypervisor_deleted, hypervisor_values

    assert hypervisor_sync(host).ok
    assert value(scrape()["blockmig_host_sync_errors"], "blockmig_host_sync_errors_total", host="kvm01") == 0
    values = hypervisor_values(host)
    with django_capture_on_commit_callbacks(execute=True):
        host.delete()
        announce_hypervisor_deleted(host, users["admin"], "test", values)
    assert "kvm01" not in {s.labels.get("host") for s in scrape().get("blockmig_host_sync_errors", [])}
