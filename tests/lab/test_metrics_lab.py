"""/metrics during a real migration of the seed chain: a real worker process drives a real
blockcopy in QEMU, and each scrape (parsed by prometheus_client) reads its progress from the
database the worker writes to: the copied bytes grow, the worker holds the lease, and after
the approval the pivot and the wait for approval are counted."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from blockmig.lifecycle import DiskRequest, migration_approve, migration_request
from blockmig.notify.models import Notification
from hosts.sync.hypervisor import hypervisor_sync
from tests.helpers import wait_for_state, wait_until
from tests.lab.engine_helpers import Disk, copy_seed_chain, make_hypervisor, run

pytestmark = pytest.mark.lab

MIB = 1024**2
# Written into the seed's active layer, past the ext4 data, so the shallow copy has enough
# to move for several scrapes at the bandwidth below (the seed layers hold ~1 MiB each).
EXTRA_MIB = 32
BANDWIDTH_MIB = 4


def scrape() -> dict[str, list]:
    response = Client().get("/metrics")  # from 127.0.0.1: the default allow-list
    assert response.status_code == 200, response.content
    return {family.name: family.samples for family in text_string_to_metric_families(response.content.decode())}


def sample(families, family: str, name: str, **labels) -> float | None:
    for s in families.get(family, []):
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def seed_with_data(lab, directory: Path) -> list[Disk]:
    snap2, _snap1, _base = copy_seed_chain(lab, directory)
    run("qemu-io", "-f", "qcow2", "-c", f"write -P 0xcd 512M {EXTRA_MIB}M", snap2)
    return [Disk("vda", snap2)]


def test_scrapes_see_a_real_seed_copy_grow_then_its_pivot(lab, domains, people, worker):
    vm = domains.prepared("metricsvm", lambda directory: seed_with_data(lab, directory))
    host = make_hypervisor([vm.backups])
    assert hypervisor_sync(host).ok
    migration = migration_request(
        user=people["operator"],
        hypervisor=host,
        domain_uuid=vm.uuid,
        disks=[DiskRequest("vda", str(vm.backups / "copy.qcow2"))],
        mode="shallow",
        bandwidth_mib=BANDWIDTH_MIB,
    )
    key = {"migration": str(migration.pk), "host": host.name, "domain": vm.name}
    copied = "blockmig_migration_copy_bytes"

    first = wait_until(lambda: sample(scrape(), copied, copied, **key), "copied bytes above 0 on /metrics", timeout=60)
    families = scrape()
    second = wait_until(
        lambda: (value := sample(scrape(), copied, copied, **key)) is not None and value > first and value,
        "copied bytes growing between scrapes",
        timeout=60,
    )
    assert second > first > 0
    total = sample(families, "blockmig_migration_copy_total_bytes", "blockmig_migration_copy_total_bytes", **key)
    assert total is not None and total >= EXTRA_MIB * MIB
    assert sample(families, "blockmig_migrations", "blockmig_migrations", state="copying") >= 1
    holders = {s.labels["worker"]: s.value for s in families["blockmig_worker_leases"]}
    migration.refresh_from_db()
    assert holders.get(migration.lease_owner, 0) >= 1  # the real worker process holds it

    wait_for_state(migration, "ready", timeout=120)
    assert Notification.objects.filter(migration=migration, event="awaiting_approval").exists()
    migration_approve(migration=migration, user=people["approver"])
    migration = wait_for_state(migration, ["completed", "failed"], timeout=60)
    assert migration.state == "completed", migration.failure_reason

    after = scrape()
    assert sample(after, copied, copied, **key) is None  # finished: no longer an active copy
    wait = "blockmig_approval_wait_seconds"
    assert sample(after, wait, f"{wait}_count", by="person") >= 1
    pivot = "blockmig_pivot_duration_seconds"
    assert sample(after, pivot, f"{pivot}_count", outcome="completed") >= 1
    assert sample(after, "blockmig_host_sync_duration_seconds", "blockmig_host_sync_duration_seconds_count", host=host.name) >= 1
