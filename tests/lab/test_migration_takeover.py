"""kill -9 of the worker at the worst moments: a restarted worker takes over and finishes,
never starts a copy twice, and the domain ends defined."""

import pytest
from django.utils import timezone

from blockmig.lifecycle import DiskRequest, migration_approve, migration_request, migration_set_bandwidth
from blockmig.models import AuditEvent
from tests.helpers import wait_for_state
from tests.lab.engine_helpers import has_block_job, make_hypervisor, run
from tests.lab.fault_helpers import wait_for_progress

pytestmark = pytest.mark.lab
MiB = 2**20
TAKEOVER = 30  # seconds the issue allows


def copies_started(migration) -> int:
    return AuditEvent.objects.filter(migration=migration, event_type="copying").count()


@pytest.mark.parametrize("force_undefine", [False, True], ids=["transient_job", "undefine"])
def test_kill9_while_copying_then_restart_finishes(domains, people, worker, force_undefine):
    vm = domains.images("kcopy", [("vda", "qcow2", 64 * MiB, "write -P 0x5a 0 32M")])
    copy = str(vm.backups / "copy.qcow2")
    host = make_hypervisor([vm.backups])
    migration = migration_request(
        user=people["operator"],
        hypervisor=host,
        domain_uuid=vm.uuid,
        disks=[DiskRequest("vda", copy)],
        bandwidth_mib=1,
        force_undefine=force_undefine,
    )
    wait_for_state(migration, "copying")
    wait_for_progress(migration)
    worker.kill9()
    assert vm.is_persistent() is (not force_undefine)
    worker.start()
    migration_set_bandwidth(migration=migration, user=people["operator"], bandwidth_mib=0)
    wait_for_state(migration, "ready", timeout=TAKEOVER)
    assert AuditEvent.objects.filter(migration=migration, event_type="takeover").exists()
    migration_approve(migration=migration, user=people["approver"])
    migration = wait_for_state(migration, ["completed", "failed"])
    assert migration.state == "completed", migration.failure_reason
    assert copies_started(migration) == 1
    assert vm.is_persistent()
    assert vm.sources()["vda"] == copy and vm.sources(inactive=True)["vda"] == copy


def test_kill9_while_awaiting_approval_then_restart_pivots(domains, people, worker):
    vm = domains.seed()
    copy = str(vm.backups / "copy.qcow2")
    migration = migration_request(
        user=people["operator"], hypervisor=make_hypervisor([vm.backups]), domain_uuid=vm.uuid, disks=[DiskRequest("vda", copy)]
    )
    wait_for_state(migration, "ready")
    worker.kill9()
    worker.start()
    migration_approve(migration=migration, user=people["approver"])
    migration = wait_for_state(migration, ["completed", "failed"], timeout=TAKEOVER)
    assert migration.state == "completed", migration.failure_reason
    assert AuditEvent.objects.filter(migration=migration, event_type="takeover").exists()
    assert vm.is_persistent() and vm.sources(inactive=True)["vda"] == copy


def test_kill9_after_pivot_requested_and_done_then_restart_verifies(domains, people, worker):
    """The worker dies after the approval and libvirt pivots anyway (here by virsh): the
    takeover finds the guest on the destination, verifies, and completes."""
    vm = domains.seed()
    copy = str(vm.backups / "copy.qcow2")
    migration = migration_request(
        user=people["operator"], hypervisor=make_hypervisor([vm.backups]), domain_uuid=vm.uuid, disks=[DiskRequest("vda", copy)]
    )
    wait_for_state(migration, "ready")
    worker.kill9()
    migration_approve(migration=migration, user=people["approver"])
    run("virsh", "-c", "qemu:///system", "blockjob", vm.name, "vda", "--pivot")
    worker.start()
    migration = wait_for_state(migration, ["completed", "failed"], timeout=TAKEOVER)
    assert migration.state == "completed", migration.failure_reason
    assert vm.sources()["vda"] == copy and vm.sources(inactive=True)["vda"] == copy


def test_kill9_with_pivot_requested_on_undefine_path_ends_defined(domains, people, worker):
    vm = domains.seed()
    copy = str(vm.backups / "copy.qcow2")
    migration = migration_request(
        user=people["operator"],
        hypervisor=make_hypervisor([vm.backups]),
        domain_uuid=vm.uuid,
        disks=[DiskRequest("vda", copy)],
        force_undefine=True,
    )
    wait_for_state(migration, "ready")
    assert not vm.is_persistent()
    worker.kill9()
    migration_approve(migration=migration, user=people["approver"])
    worker.start()
    migration = wait_for_state(migration, ["completed", "failed"], timeout=TAKEOVER)
    assert migration.state == "completed", migration.failure_reason
    assert vm.is_persistent() and vm.sources(inactive=True)["vda"] == copy


def test_sigterm_drains_hands_the_lease_over_and_leaves_the_copy_running(domains, people, worker):
    """A worker stopped politely exits at once without cancelling the block job; the next
    worker takes the migration over and finishes it."""
    vm = domains.images("drain", [("vda", "qcow2", 64 * MiB, "write -P 0x3c 0 32M")])
    copy = str(vm.backups / "copy.qcow2")
    migration = migration_request(
        user=people["operator"],
        hypervisor=make_hypervisor([vm.backups]),
        domain_uuid=vm.uuid,
        disks=[DiskRequest("vda", copy)],
        bandwidth_mib=1,
    )
    wait_for_state(migration, "copying")
    wait_for_progress(migration)
    worker.stop()
    # 0: it drained and exited by itself (stop() kills a worker that is still there after 20 s).
    assert worker.proc.returncode == 0
    migration.refresh_from_db()
    assert migration.state == "copying"
    assert migration.lease_expires_at is not None and migration.lease_expires_at <= timezone.now()
    assert has_block_job(vm.name, "vda"), "the drain must leave QEMU's mirror running"
    worker.start()
    migration_set_bandwidth(migration=migration, user=people["operator"], bandwidth_mib=0)
    wait_for_state(migration, "ready", timeout=TAKEOVER)
    assert AuditEvent.objects.filter(migration=migration, event_type="takeover").exists()
    migration_approve(migration=migration, user=people["approver"])
    migration = wait_for_state(migration, ["completed", "failed"])
    assert migration.state == "completed", migration.failure_reason
    assert copies_started(migration) == 1
    assert vm.sources()["vda"] == copy and vm.sources(inactive=True)["vda"] == copy
