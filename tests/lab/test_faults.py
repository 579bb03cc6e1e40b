"""The fault tier (issue 8): an operator's bad day, against real libvirtd, QEMU and worker
processes. Each test causes one fault at the worst moment and then checks what a person
finds: where the guest runs, what its definition says, what is left on disk, whether a block
job is orphaned, and whether the audit trail tells the story (assert_clean_outcome).

The libvirtd-restart tests restart the machine's libvirtd: other lab sessions running at the
same moment see their connections drop. Run them on their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from django.db import connection

from blockmig.lifecycle import DiskRequest, migration_approve, migration_request, migration_set_bandwidth
from hosts.lab.domains import virsh
from hosts.lab.services import ensure_libvirtd, stop_libvirtd
from tests.helpers import wait_for_state
from tests.lab.engine_helpers import WorkerProcess, has_block_job, make_hypervisor
from tests.lab.fault_helpers import (
    MiB,
    assert_clean_outcome,
    driver_of,
    events,
    log_contains,
    wait_for_end,
    wait_for_event,
    wait_for_progress,
    wait_until,
    worker_pid,
)

pytestmark = pytest.mark.lab

PATTERN = 0x5A
TAKEOVER = 30  # generous bound for a takeover with 3 s leases
STRATEGIES = pytest.mark.parametrize("force_undefine", [False, True], ids=["transient_job", "undefine"])
COPYING_STORY = ["requested", "preflight", "copying"]
COMPLETED_STORY = [*COPYING_STORY, "ready", "approved", "completed"]


def vm_with_data(domains, label: str, written_mib: int = 32):
    """A domain whose one qcow2 disk holds `written_mib` MiB of PATTERN in its active layer
    (checked on the destination at the end): at 1 MiB/s its copy lasts about `written_mib`
    seconds, time enough to act mid-copy; unlimited, it is ready at once."""
    size = max(64, written_mib + 32)
    return domains.images(label, [("vda", "qcow2", size * MiB, f"write -P {PATTERN:#x} 0 {written_mib}M")])


def request(vm, people, destination: str, *, roots=None, **kwargs):
    host = make_hypervisor(roots or [vm.backups])
    return migration_request(
        user=people["operator"], hypervisor=host, domain_uuid=vm.uuid, disks=[DiskRequest("vda", destination)], **kwargs
    )


def copying(vm, people, destination: str, **kwargs):
    """A bandwidth-limited copy that has started moving data."""
    migration = request(vm, people, destination, bandwidth_mib=1, **kwargs)
    wait_for_state(migration, "copying")
    wait_for_progress(migration)
    assert has_block_job(vm.name, "vda")
    return migration


def finish(migration, people):
    """Lift the limit, approve at ready, wait for the end."""
    migration_set_bandwidth(migration=migration, user=people["operator"], bandwidth_mib=0)
    wait_for_state(migration, "ready", timeout=90)
    migration_approve(migration=migration, user=people["approver"])
    return wait_for_end(migration)


def expect_failure(migration):
    migration = wait_for_end(migration)
    assert migration.state == "failed", f"{migration.state}: {migration.failure_reason!r}"
    return migration


def assert_reason_says(migration, words: str) -> None:
    """Checked after the outcome on the host, so a failing test shows both."""
    assert words in migration.failure_reason, f"the reason does not say {words!r}: {migration.failure_reason!r}"


def copying_events(migration) -> int:
    return len(events(migration, "copying"))


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


# -- libvirtd restarts ---------------------------------------------------------------------------


def restart_libvirtd(down_seconds: float = 3.0) -> None:
    """Stop libvirtd (QEMU keeps running), leave it down long enough for the worker to notice,
    start it again. Always leaves libvirtd running."""
    try:
        stop_libvirtd()
        time.sleep(down_seconds)
    finally:
        ensure_libvirtd()


def test_libvirtd_restarted_while_copying_keeps_copying_and_completes_on_destination(domains, people, worker):
    vm = vm_with_data(domains, "lvcopy", written_mib=96)
    copy = str(vm.backups / "copy.qcow2")
    migration = copying(vm, people, copy)
    restart_libvirtd()
    wait_for_event(migration, "libvirt_reconnected", timeout=60)
    migration.refresh_from_db()
    assert migration.state == "copying", f"{migration.state}: {migration.failure_reason!r}"
    assert not events(migration, "failed")
    assert has_block_job(vm.name, "vda"), "QEMU's mirror must survive the daemon restart"
    assert os.path.exists(copy)
    assert worker.proc.poll() is None
    migration = finish(migration, people)
    assert migration.state == "completed", migration.failure_reason
    assert copying_events(migration) == 1
    assert_clean_outcome(
        vm,
        migration,
        on={"vda": copy},
        pattern=(PATTERN, 96 * MiB),
        story=[*COPYING_STORY, "libvirt_reconnected", "ready", "approved", "completed"],
    )


def test_libvirtd_restarted_while_awaiting_approval_stays_ready_and_pivots_on_approval(domains, people, worker):
    vm = vm_with_data(domains, "lvready")
    copy = str(vm.backups / "copy.qcow2")
    migration = request(vm, people, copy)
    wait_for_state(migration, "ready")
    restart_libvirtd()
    wait_for_event(migration, "libvirt_reconnected", timeout=60)
    migration.refresh_from_db()
    assert migration.state == "ready", f"{migration.state}: {migration.failure_reason!r}"
    assert has_block_job(vm.name, "vda")
    migration_approve(migration=migration, user=people["approver"])
    migration = wait_for_end(migration)
    assert migration.state == "completed", migration.failure_reason
    assert copying_events(migration) == 1
    assert_clean_outcome(
        vm,
        migration,
        on={"vda": copy},
        pattern=(PATTERN, 32 * MiB),
        story=[*COPYING_STORY, "ready", "libvirt_reconnected", "approved", "completed"],
    )


# -- the database is unavailable -----------------------------------------------------------------

LOCK_SECONDS = 45  # past blockmig's 30 s SQLite busy timeout


def test_database_locked_45s_while_copying_keeps_worker_copy_and_migration_alive(domains, people, worker):
    if connection.vendor != "sqlite":
        pytest.fail(
            "this test holds an SQLite write lock: run it on the SQLite test database that `make test` uses "
            "(PostgreSQL restarts are tests/deploy/test_deploy_faults.py)"
        )
    vm = vm_with_data(domains, "dblock", written_mib=96)  # still copying when the lock ends
    copy = str(vm.backups / "copy.qcow2")
    migration = copying(vm, people, copy)
    lock = sqlite3.connect(connection.settings_dict["NAME"], timeout=60, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # WAL: readers go on, every writer waits, then fails
        migration.refresh_from_db()  # reads only, from here to the ROLLBACK
        frozen_at = migration.progress_at
        deadline = time.monotonic() + LOCK_SECONDS
        while time.monotonic() < deadline:
            assert has_block_job(vm.name, "vda"), "a database outage must not cancel the copy"
            time.sleep(2)
        migration.refresh_from_db()
        assert migration.progress_at == frozen_at, "the lock did not hold: the worker wrote meanwhile"
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert worker.proc.poll() is None, "the worker exited on a database error"
    migration.refresh_from_db()
    assert migration.state == "copying", f"{migration.state}: {migration.failure_reason!r}"
    assert not events(migration, "failed")
    assert has_block_job(vm.name, "vda")

    def writes_again():
        migration.refresh_from_db()
        return migration.progress_at is not None and migration.progress_at != frozen_at

    wait_until(writes_again, "progress written again after the lock", timeout=60)
    migration = finish(migration, people)
    assert migration.state == "completed", migration.failure_reason
    assert copying_events(migration) == 1
    assert worker.proc.poll() is None
    assert_clean_outcome(vm, migration, on={"vda": copy}, pattern=(PATTERN, 96 * MiB), story=COMPLETED_STORY)


# -- workers stopped and killed ------------------------------------------------------------------


def test_sigstopped_worker_loses_its_lease_and_never_acts_after_the_takeover(domains, people, worker):
    vm = vm_with_data(domains, "sigstop", written_mib=64)
    copy = str(vm.backups / "copy.qcow2")
    migration = copying(vm, people, copy)
    first = driver_of(migration)
    assert worker_pid(first) == worker.proc.pid, f"the copy was started by {first}, not worker pid {worker.proc.pid}"
    logs = worker.log_dir / f"second-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    logs.mkdir()
    second = WorkerProcess(logs)  # same short lease settings as the fixture's
    os.kill(worker.proc.pid, signal.SIGSTOP)
    try:
        second.start()
        takeover = wait_for_event(
            migration, "takeover", lambda e: worker_pid(e.details.get("worker")) == second.proc.pid, timeout=TAKEOVER
        )
        assert takeover.details.get("previous_worker") == first, takeover.details
        migration.refresh_from_db()
        assert migration.state == "copying", f"{migration.state}: {migration.failure_reason!r}"
        os.kill(worker.proc.pid, signal.SIGCONT)  # the first worker wakes up mid-copy
        wait_until(lambda: log_contains(worker.log_path, "lease lost"), "'lease lost' in the first worker's log", timeout=30)
        assert has_block_job(vm.name, "vda"), "the stale worker must not cancel the copy"
        migration = finish(migration, people)
        assert migration.state == "completed", migration.failure_reason
        after = [e for e in events(migration) if (e.created_at, e.pk) > (takeover.created_at, takeover.pk)]
        stale = [(e.event_type, e.details) for e in after if (e.details or {}).get("worker") == first]
        assert not stale, f"the stopped worker acted after the takeover: {stale}"
        assert worker.proc.poll() is None, "a lost lease must not end the worker process"
        assert second.proc.poll() is None
        assert copying_events(migration) == 1
        assert_clean_outcome(
            vm,
            migration,
            on={"vda": copy},
            pattern=(PATTERN, 64 * MiB),
            story=[*COPYING_STORY, "takeover", "ready", "approved", "completed"],
        )
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)
        second.stop()


@STRATEGIES
def test_kill9_while_pivoting_then_restart_completes_on_destination(domains, people, worker, force_undefine):
    vm = vm_with_data(domains, "kpivot")
    copy = str(vm.backups / "copy.qcow2")
    migration = request(vm, people, copy, force_undefine=force_undefine)
    wait_for_state(migration, "ready")
    migration_approve(migration=migration, user=people["approver"])
    worker.kill9()
    migration.refresh_from_db()
    died_while = migration.state
    worker.start()
    migration = wait_for_end(migration, timeout=60)
    assert migration.state == "completed", migration.failure_reason
    if died_while == "pivoting":  # else the worker had finished before the signal landed
        assert events(migration, "takeover"), "the restarted worker did not say it took over"
    assert copying_events(migration) == 1
    assert_clean_outcome(vm, migration, on={"vda": copy}, pattern=(PATTERN, 32 * MiB), story=COMPLETED_STORY)
