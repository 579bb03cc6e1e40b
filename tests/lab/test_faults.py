"""The fault tier (issue 8), on the host's side: the destination changes under the copy, the
block job or the domain ends behind blockmig's back, the destination filesystem fills up.
Against real libvirtd, QEMU and worker processes, each test causes one fault at the worst
moment and then checks what a person finds: where the guest runs, what its definition says,
what is left on disk, whether a block job is orphaned, and whether the audit trail tells the
story (assert_clean_outcome). The services' faults are in test_faults_services.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from blockmig.lifecycle import migration_approve
from hosts.lab.domains import virsh
from tests.helpers import wait_for_state
from tests.lab.fault_helpers import (
    assert_clean_outcome,
)
from tests.lab.fault_migrations import (
    COPYING_STORY,
    STRATEGIES,
    assert_reason_says,
    copying,
    expect_failure,
    request,
    vm_with_data,
)

pytestmark = pytest.mark.lab


# -- the destination changes under the copy ------------------------------------------------------


def test_destination_deleted_after_ready_refuses_pivot_and_keeps_guest_on_source(domains, people, worker):
    vm = domains.seed()
    source = str(vm.disks[0].path)
    copy = vm.backups / "copy.qcow2"
    migration = request(vm, people, str(copy))
    wait_for_state(migration, "ready")
    copy.unlink()  # QEMU still mirrors into the unlinked inode
    migration_approve(migration=migration, user=people["approver"])
    migration = expect_failure(migration)
    assert not copy.exists()
    assert_clean_outcome(vm, migration, on={"vda": source}, story=[*COPYING_STORY, "ready", "approved", "failed"])
    assert_reason_says(migration, "was deleted or replaced")


def test_destination_replaced_after_ready_refuses_pivot_and_leaves_the_other_file_alone(domains, people, worker):
    """Somebody puts another file at the destination path: same name, same size, same bytes
    at that moment, but not the file QEMU mirrors into. The pivot is refused, and the file
    blockmig did not create is not removed."""
    vm = domains.seed()
    source = str(vm.disks[0].path)
    copy = vm.backups / "copy.qcow2"
    migration = request(vm, people, str(copy))
    wait_for_state(migration, "ready")
    stranger = vm.backups / "restored.qcow2"
    shutil.copyfile(copy, stranger)
    os.replace(stranger, copy)
    info = copy.stat()
    migration_approve(migration=migration, user=people["approver"])
    migration = expect_failure(migration)
    assert_clean_outcome(
        vm,
        migration,
        on={"vda": source},
        story=[*COPYING_STORY, "ready", "approved", "failed"],
        kept={str(copy): (info.st_dev, info.st_ino)},
    )
    assert_reason_says(migration, "was deleted or replaced")


# -- the block job or the domain ends behind blockmig's back --------------------------------------


@STRATEGIES
def test_blockjob_aborted_outside_blockmig_fails_naming_it_and_removes_partial_copy(domains, people, worker, force_undefine):
    vm = vm_with_data(domains, "outabort")
    source = str(vm.disks[0].path)
    copy = vm.backups / "copy.qcow2"
    migration = copying(vm, people, str(copy), force_undefine=force_undefine)
    assert copy.exists()
    virsh("blockjob", vm.name, "vda", "--abort")
    migration = expect_failure(migration)
    assert_clean_outcome(vm, migration, on={"vda": source}, story=[*COPYING_STORY, "failed"])
    assert_reason_says(migration, "cancelled outside blockmig")


def test_domain_destroyed_mid_copy_fails_removes_partial_copy_and_keeps_definition(domains, people, worker):
    vm = vm_with_data(domains, "destroyed")
    source = str(vm.disks[0].path)
    copy = vm.backups / "copy.qcow2"
    migration = copying(vm, people, str(copy))
    virsh("destroy", vm.name)
    migration = expect_failure(migration)
    assert vm.name in migration.saved_definition and source in migration.saved_definition
    assert_clean_outcome(vm, migration, on={"vda": source}, domain="shut off", story=[*COPYING_STORY, "failed"])
    assert_reason_says(migration, "no longer running")


def test_domain_destroyed_and_undefined_mid_copy_fails_removes_partial_copy_and_keeps_saved_definition(domains, people, worker):
    vm = vm_with_data(domains, "undefined")
    source = str(vm.disks[0].path)
    copy = vm.backups / "copy.qcow2"
    migration = copying(vm, people, str(copy))
    # Undefine first (the running domain turns transient), then destroy: the domain goes in
    # one step, never seen shut off in between (that would be the destroy-only test).
    virsh("undefine", vm.name)
    virsh("destroy", vm.name)
    migration = expect_failure(migration)
    # Kept for an admin to restore; blockmig does not bring back a domain somebody removed.
    assert migration.saved_definition.strip()
    assert f"<name>{vm.name}</name>" in migration.saved_definition and source in migration.saved_definition
    assert_clean_outcome(vm, migration, on=None, domain="gone", story=[*COPYING_STORY, "failed"])
    assert_reason_says(migration, "no longer exists")


# -- the destination filesystem fills up ---------------------------------------------------------


@pytest.fixture
def small_fs():
    """An 8 MiB tmpfs, used as the host's allowed root: a copy of 32 MiB cannot fit."""
    path = Path("/var/tmp") / f"blockmig-enospc-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)], check=True)
    yield path
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], check=False)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("mode", ["shallow", "full"])
def test_destination_filesystem_full_fails_quoting_enospc_and_removes_partial_copy(small_fs, domains, people, worker, mode):
    vm = vm_with_data(domains, "enospc")
    source = str(vm.disks[0].path)
    copy = small_fs / "copy.qcow2"
    migration = request(vm, people, str(copy), roots=[small_fs], mode=mode)
    migration = expect_failure(migration)
    assert_clean_outcome(vm, migration, on={"vda": source}, story=[*COPYING_STORY, "failed"])
    assert_reason_says(migration, "No space left on device")
    assert list(small_fs.iterdir()) == [], "something is left on the full filesystem"
