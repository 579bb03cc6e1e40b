"""Both persistent-domain paths leave a defined domain on success, abort and failure; and
several disks pivot together or not at all."""

import subprocess

import pytest

from blockmig.lifecycle import DiskRequest, migration_abort, migration_approve, migration_request
from tests.helpers import wait_for_state
from tests.lab.engine_helpers import make_hypervisor

pytestmark = pytest.mark.lab
MiB = 2**20
PATHS = pytest.mark.parametrize("force_undefine", [False, True], ids=["transient_job", "undefine"])


@pytest.fixture
def tiny_fs(domains):
    """A 4 MiB tmpfs inside the allowed root: a copy of more data fails with ENOSPC."""
    mounts = []

    def make(vm):
        path = vm.backups / "tiny"
        path.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], check=True)
        mounts.append(path)
        return path

    yield make
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


@PATHS
def test_success_leaves_domain_defined_on_copy(domains, people, worker, force_undefine):
    vm = domains.seed()
    copy = str(vm.backups / "copy.qcow2")
    migration = migration_request(
        user=people["operator"],
        hypervisor=make_hypervisor([vm.backups]),
        domain_uuid=vm.uuid,
        disks=[DiskRequest("vda", copy)],
        force_undefine=force_undefine,
    )
    migration = wait_for_state(migration, "ready")
    assert migration.definition_strategy == ("undefine" if force_undefine else "transient_job")
    assert migration.saved_definition
    assert vm.is_persistent() is (not force_undefine)
    migration_approve(migration=migration, user=people["approver"])
    migration = wait_for_state(migration, ["completed", "failed"])
    assert migration.state == "completed", migration.failure_reason
    assert vm.is_persistent() and vm.sources(inactive=True)["vda"] == copy


@PATHS
def test_abort_leaves_domain_defined_on_source(domains, people, worker, force_undefine):
    vm = domains.seed()
    source = str(vm.disks[0].path)
    migration = migration_request(
        user=people["operator"],
        hypervisor=make_hypervisor([vm.backups]),
        domain_uuid=vm.uuid,
        disks=[DiskRequest("vda", str(vm.backups / "copy.qcow2"))],
        force_undefine=force_undefine,
    )
    wait_for_state(migration, "ready")
    migration_abort(migration=migration, user=people["operator"])
    assert wait_for_state(migration, ["aborted", "failed"]).state == "aborted"
    assert vm.is_persistent() and vm.sources(inactive=True)["vda"] == source and vm.sources()["vda"] == source


@PATHS
def test_failure_leaves_domain_defined_on_source(domains, people, worker, tiny_fs, force_undefine):
    vm = domains.images("enospc", [("vda", "raw", 32 * MiB, "write -P 0x77 0 24M")])
    source = str(vm.disks[0].path)
    destination = tiny_fs(vm) / "copy.raw"
    migration = migration_request(
        user=people["operator"],
        hypervisor=make_hypervisor([vm.backups]),
        domain_uuid=vm.uuid,
        disks=[DiskRequest("vda", str(destination))],
        mode="full",
        dest_format="raw",
        force_undefine=force_undefine,
    )
    migration = wait_for_state(migration, ["failed", "ready", "completed"])
    assert migration.state == "failed"
    assert "vda" in migration.failure_reason
    assert vm.is_persistent() and vm.sources(inactive=True)["vda"] == source and vm.sources()["vda"] == source
    assert not destination.exists()


def test_two_disks_pivot_together(domains, people, worker):
    vm = domains.images(
        "twodisk", [("vda", "qcow2", 64 * MiB, "write -P 0x11 0 8M"), ("vdb", "raw", 64 * MiB, "write -P 0x22 0 8M")]
    )
    dests = {t: str(vm.backups / f"{t}-copy.qcow2") for t in ("vda", "vdb")}
    migration = migration_request(
        user=people["operator"],
        hypervisor=make_hypervisor([vm.backups]),
        domain_uuid=vm.uuid,
        disks=[DiskRequest(t, p) for t, p in dests.items()],
        mode="full",
    )
    migration = wait_for_state(migration, "ready")
    assert all(d.ready for d in migration.disks.all())
    migration_approve(migration=migration, user=people["approver"])
    migration = wait_for_state(migration, ["completed", "failed"])
    assert migration.state == "completed", migration.failure_reason
    assert vm.sources() == dests and vm.sources(inactive=True) == dests


def test_two_disks_one_fails_neither_pivots(domains, people, worker, tiny_fs):
    vm = domains.images(
        "twofail", [("vda", "qcow2", 64 * MiB, "write -P 0x11 0 2M"), ("vdb", "raw", 32 * MiB, "write -P 0x22 0 24M")]
    )
    before = vm.sources()
    dests = {"vda": str(vm.backups / "vda-copy.qcow2"), "vdb": str(tiny_fs(vm) / "vdb-copy.raw")}
    migration = migration_request(
        user=people["operator"],
        hypervisor=make_hypervisor([vm.backups]),
        domain_uuid=vm.uuid,
        disks=[DiskRequest(t, p) for t, p in dests.items()],
        mode="full",
        dest_format="raw",
    )
    migration = wait_for_state(migration, ["failed", "ready", "completed"])
    assert migration.state == "failed", migration.state
    assert "vdb" in migration.failure_reason
    assert vm.sources() == before and vm.sources(inactive=True) == before
