"""The seed scenario end to end through the lifecycle API, with a real worker process."""

import time

import pytest

from blockmig.lifecycle import DiskRequest, migration_approve, migration_request
from blockmig.models import AuditEvent
from hosts.lab.seed import list_files_in_image
from hosts.models import Disk
from hosts.sync.hypervisor import hypervisor_sync
from tests.helpers import wait_for_state
from tests.lab.engine_helpers import chain_paths, make_hypervisor

pytestmark = pytest.mark.lab


def stored_mirror(host, uuid: str, timeout: float = 10) -> tuple[str, str, str]:
    """vda's source and block job as the inventory stores them, once the engine's refresh
    (on a thread of its own) has committed them; no periodic sync runs in these tests."""
    deadline = time.monotonic() + timeout
    while True:
        vda = Disk.objects.get(domain__hypervisor=host, domain__uuid=uuid, target="vda")
        if vda.job_mirror_path or time.monotonic() > deadline:
            return (vda.source, vda.job_type, vda.job_mirror_path)
        time.sleep(0.1)


def test_seed_shallow_copy_approved_and_pivoted(domains, people, worker):
    vm = domains.seed()
    snap2, snap1, base = (str(d) for d in [vm.disks[0].path, vm.directory / "snap1.qcow2", vm.directory / "base.qcow2"])
    copy = str(vm.backups / "copy.qcow2")
    host = make_hypervisor([vm.backups])
    assert hypervisor_sync(host).ok

    migration = migration_request(
        user=people["operator"],
        hypervisor=host,
        domain_uuid=vm.uuid,
        disks=[DiskRequest("vda", copy)],
        mode="shallow",
    )
    wait_for_state(migration, "ready", timeout=60)
    assert vm.sources()["vda"] == snap2  # nothing pivots before an approval
    # The engine refreshed the inventory once libvirt accepted the copy: the mirror is stored
    # (and published) without waiting for the periodic sync.
    assert stored_mirror(host, vm.uuid) == (snap2, "copy", copy)

    migration_approve(migration=migration, user=people["approver"])
    migration = wait_for_state(migration, ["completed", "failed"], timeout=60)
    assert migration.state == "completed", migration.failure_reason

    assert vm.sources()["vda"] == copy
    assert chain_paths(copy) == [copy, snap1, base]
    assert list_files_in_image(copy) == ["bar", "baz", "foo"]
    assert vm.sources(inactive=True)["vda"] == copy
    assert vm.is_persistent()
    steps = [(e.event_type, e.actor_name) for e in AuditEvent.objects.filter(migration=migration)]
    assert steps[0] == ("requested", "operator")
    assert ("approved", "approver") in steps
    for expected in ("preflight", "copying", "ready", "verified", "completed"):
        assert expected in [event for event, _ in steps], steps
    assert migration.approved_by == people["approver"]
