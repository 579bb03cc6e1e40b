"""Approvals, the auto-pivot policy, abort and bandwidth, against real block jobs."""

import os
import time

import pytest

from blockmig.errors import Refused
from blockmig.lifecycle import (
    DiskRequest,
    hypervisor_set_auto_pivot,
    migration_abort,
    migration_approve,
    migration_request,
    migration_set_bandwidth,
)
from blockmig.models import AuditEvent
from tests.helpers import wait_for_state, wait_until
from tests.lab.engine_helpers import chain_paths, has_block_job, make_hypervisor, run

pytestmark = pytest.mark.lab
MiB = 2**20


def ready_migration(vm, user, host, **kwargs):
    migration = migration_request(
        user=user, hypervisor=host, domain_uuid=vm.uuid, disks=[DiskRequest("vda", str(vm.backups / "copy.qcow2"))], **kwargs
    )
    return wait_for_state(migration, "ready")


def test_self_approval_refused(domains, people, worker):
    vm = domains.seed()
    host = make_hypervisor([vm.backups])
    migration = ready_migration(vm, people["admin"], host)  # admin holds the approver role too
    with pytest.raises(Refused, match="four eyes"):
        migration_approve(migration=migration, user=people["admin"])
    migration.refresh_from_db()
    assert migration.state == "ready"
    assert AuditEvent.objects.filter(migration=migration, event_type="refused", actor_name="admin").exists()
    migration_approve(migration=migration, user=people["approver"])
    assert wait_for_state(migration, ["completed", "failed"]).state == "completed"


def test_viewer_and_operator_cannot_approve(domains, people, worker):
    vm = domains.seed()
    host = make_hypervisor([vm.backups])
    migration = ready_migration(vm, people["operator"], host)
    for name in ("viewer", "operator2"):
        with pytest.raises(Refused, match="approver role"):
            migration_approve(migration=migration, user=people[name])
    migration.refresh_from_db()
    assert migration.state == "ready"
    assert vm.sources()["vda"] == str(vm.disks[0].path)
    refused = AuditEvent.objects.filter(migration=migration, event_type="refused")
    assert sorted(refused.values_list("actor_name", flat=True)) == ["operator2", "viewer"]
    migration_abort(migration=migration, user=people["operator"])
    assert wait_for_state(migration, ["aborted", "failed"]).state == "aborted"


def test_auto_pivot_policy_pivots_without_approval_and_is_audited(domains, people, worker):
    vm = domains.seed()
    host = make_hypervisor([vm.backups])
    with pytest.raises(Refused):
        hypervisor_set_auto_pivot(hypervisor=host, user=people["operator"], enabled=True)
    hypervisor_set_auto_pivot(hypervisor=host, user=people["admin"], enabled=True)
    migration = migration_request(
        user=people["operator"], hypervisor=host, domain_uuid=vm.uuid, disks=[DiskRequest("vda", str(vm.backups / "copy.qcow2"))]
    )
    migration = wait_for_state(migration, ["completed", "failed"])
    assert migration.state == "completed", migration.failure_reason
    assert migration.approved_by is None
    policy = AuditEvent.objects.get(event_type="policy_changed")
    assert (policy.actor_name, policy.details["auto_pivot"]) == ("admin", True)
    auto = AuditEvent.objects.get(migration=migration, event_type="auto_pivot")
    assert auto.details["policy_set_by"] == "admin"
    assert vm.sources()["vda"] == str(vm.backups / "copy.qcow2")


def test_pivot_refused_before_ready(domains, people, worker):
    vm = domains.images("slow", [("vda", "qcow2", 64 * MiB, "write -P 0x5a 0 32M")])
    host = make_hypervisor([vm.backups])
    migration = migration_request(
        user=people["operator"],
        hypervisor=host,
        domain_uuid=vm.uuid,
        disks=[DiskRequest("vda", str(vm.backups / "copy.qcow2"))],
        bandwidth_mib=1,
    )
    wait_for_state(migration, "copying")
    with pytest.raises(Refused, match="once every disk's mirror is ready"):
        migration_approve(migration=migration, user=people["approver"])
    migration_abort(migration=migration, user=people["approver"])
    assert wait_for_state(migration, ["aborted", "failed"]).state == "aborted"


def test_abort_by_operator_restores_pre_migration_state(domains, people, worker):
    vm = domains.images("abort", [("vda", "qcow2", 64 * MiB, "write -P 0x5a 0 32M")])
    source = str(vm.disks[0].path)
    copy = vm.backups / "copy.qcow2"
    host = make_hypervisor([vm.backups])
    migration = migration_request(
        user=people["operator"], hypervisor=host, domain_uuid=vm.uuid, disks=[DiskRequest("vda", str(copy))], bandwidth_mib=1
    )
    wait_for_state(migration, "copying")
    # copying is committed before blockCopy is called: wait for libvirt to have taken it.
    wait_until(lambda: migration.disks.get().job_started, f"the block job of migration #{migration.pk}")
    assert copy.exists()
    migration_abort(migration=migration, user=people["operator"])
    migration = wait_for_state(migration, ["aborted", "failed"])
    assert migration.state == "aborted", migration.failure_reason
    assert vm.sources()["vda"] == source
    assert vm.sources(inactive=True)["vda"] == source
    assert chain_paths(source) == [source]
    assert not copy.exists()
    assert vm.is_persistent()
    assert not has_block_job(vm.name, "vda")
    steps = [(e.event_type, e.actor_name) for e in AuditEvent.objects.filter(migration=migration)]
    assert ("abort_requested", "operator") in steps and steps[-1][0] == "aborted"


def test_bandwidth_change_while_copying_reaches_libvirt(domains, people, worker):
    vm = domains.images("speed", [("vda", "qcow2", 64 * MiB, "write -P 0x5a 0 32M")])
    host = make_hypervisor([vm.backups])
    migration = migration_request(
        user=people["operator"],
        hypervisor=host,
        domain_uuid=vm.uuid,
        disks=[DiskRequest("vda", str(vm.backups / "copy.qcow2"))],
        bandwidth_mib=1,
    )
    wait_for_state(migration, "copying")
    migration_set_bandwidth(migration=migration, user=people["operator"], bandwidth_mib=3)
    # Recorded by the request, applied by the worker that drives the migration.
    deadline = time.monotonic() + 10
    while str(3 * MiB) not in (info := run("virsh", "-c", "qemu:///system", "blockjob", vm.name, "vda", "--info", "--bytes")):
        assert time.monotonic() < deadline, f"the worker did not apply 3 MiB/s: {info}"
        time.sleep(0.1)
    event = AuditEvent.objects.get(migration=migration, event_type="bandwidth_changed")
    assert (event.actor_name, event.details["from_mib"], event.details["to_mib"]) == ("operator", 1, 3)
    migration_set_bandwidth(migration=migration, user=people["operator"], bandwidth_mib=0)
    migration = wait_for_state(migration, "ready")
    assert migration.bytes_total >= 32 * MiB and migration.bytes_done == migration.bytes_total
    migration_abort(migration=migration, user=people["operator"])
    wait_for_state(migration, "aborted")
    assert os.path.exists(vm.disks[0].path)
