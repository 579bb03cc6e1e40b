"""The fault tier (issue 8), the services' side: libvirtd restarts, the database is locked,
workers are stopped and killed. Same checks as test_faults.py (assert_clean_outcome).

The libvirtd-restart tests restart the machine's libvirtd: other lab sessions running at the
same moment see their connections drop. Run them on their own.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
import uuid

import pytest
from django.db import connection

from blockmig.lifecycle import migration_approve
from hosts.lab.services import ensure_libvirtd, stop_libvirtd
from tests.helpers import wait_for_state
from tests.lab.engine_helpers import WorkerProcess, has_block_job
from tests.lab.fault_helpers import (
    MiB,
    assert_clean_outcome,
    driver_of,
    events,
    log_contains,
    wait_for_end,
    wait_for_event,
    wait_until,
    worker_pid,
)
from tests.lab.fault_migrations import (
    COMPLETED_STORY,
    COPYING_STORY,
    PATTERN,
    STRATEGIES,
    TAKEOVER,
    copying,
    copying_events,
    finish,
    request,
    vm_with_data,
)

pytestmark = pytest.mark.lab


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
