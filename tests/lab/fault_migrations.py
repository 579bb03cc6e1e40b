"""How a fault test starts its migration (tests/lab/test_faults*.py): a guest with known data,
a request on a host whose roots allow the destination, a copy slow enough to act mid-way, and
the endings every test expects. Real lab, real workers; nothing is mocked."""

from __future__ import annotations

import pytest

from blockmig.lifecycle import DiskRequest, migration_approve, migration_request, migration_set_bandwidth
from tests.helpers import wait_for_state
from tests.lab.engine_helpers import has_block_job, make_hypervisor
from tests.lab.fault_helpers import (
    MiB,
    events,
    wait_for_end,
    wait_for_progress,
)

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
