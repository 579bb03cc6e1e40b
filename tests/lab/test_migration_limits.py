"""Copy limits with real copies and TWO worker processes: with 2 copies allowed on the host,
a third request waits in queued with its reason, and starts by itself when one of the two
finishes; aborting a queued migration takes it out of the queue. Small disks, slow copies
(1 MiB/s) so that two are certainly running while the third is asked for."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from blockmig.lifecycle import DiskRequest, migration_abort, migration_approve, migration_request, migration_set_bandwidth
from blockmig.limits import rules, setting
from blockmig.models import AuditEvent, Migration
from tests.helpers import wait_for_state, wait_until
from tests.lab.engine_helpers import URI, WorkerProcess, has_block_job, make_hypervisor

pytestmark = pytest.mark.lab
MiB = 2**20


@pytest.fixture
def second_worker(worker):
    """A second run_worker next to the `worker` fixture's: limits must hold across both."""
    logs = Path("/var/tmp/blockmig-worker-logs")
    process = WorkerProcess(logs).start()
    yield process
    process.stop()


def small_vms(domains, count: int):
    return [domains.images(f"lim{n}", [("vda", "qcow2", 32 * MiB, "write -P 0x3c 0 16M")]) for n in range(count)]


def request(people, host, vm, **options) -> Migration:
    return migration_request(
        user=people["operator"],
        hypervisor=host,
        domain_uuid=vm.uuid,
        disks=[DiskRequest("vda", str(vm.backups / "copy.qcow2"))],
        **options,
    )


def worker_logs(*workers) -> str:
    return "\n".join(w.log_path.read_text(errors="replace")[-3000:] for w in workers)


def test_third_copy_queues_with_its_reason_and_starts_when_one_finishes(domains, people, worker, second_worker):
    vms = small_vms(domains, 3)
    host = make_hypervisor([vm.backups for vm in vms])
    assert host.max_copies == 2  # the default
    first, second = (request(people, host, vm, bandwidth_mib=1) for vm in vms[:2])
    why = lambda: worker_logs(worker, second_worker)  # noqa: E731
    wait_for_state(first, "copying", why=why)
    wait_for_state(second, "copying", why=why)

    third = request(people, host, vms[2])
    third = wait_for_state(third, "queued", why=why)
    wait = rules.slot_for(Migration.objects.select_related("hypervisor").get(pk=third.pk))
    assert wait.position == 1
    assert wait.reason.startswith("2 copies already run on lab (limit 2); next slot when #")
    queued = AuditEvent.objects.get(migration=third, event_type="queued")
    assert queued.details["reason"].startswith("2 copies already run on lab")
    assert not has_block_job(vms[2].name, "vda")  # nothing started on the host
    assert not (vms[2].backups / "copy.qcow2").exists()

    # The first copy finishes (unlimited now, approved, pivoted): its slot goes to the third.
    migration_set_bandwidth(migration=first, user=people["operator"], bandwidth_mib=0)
    wait_for_state(first, "ready", why=why)
    migration_approve(migration=first, user=people["approver"])
    first = wait_for_state(first, ["completed", "failed"], why=why)
    assert first.state == "completed", first.failure_reason
    third = wait_for_state(third, ["copying", "ready"], why=why)
    assert Migration.objects.get(pk=second.pk).state == "copying"  # still slow, still holding its slot
    wait_until(lambda: has_block_job(vms[2].name, "vda"), "the third copy's block job")
    trail = [e.event_type for e in AuditEvent.objects.filter(migration=third)]
    assert trail[:4] == ["requested", "preflight", "queued", "copying"]
    # Never more than two copies at once: the third began only after the first completed.
    started = AuditEvent.objects.get(migration=third, event_type="copying").created_at
    assert started >= first.finished_at

    for m in (second, third):
        migration_abort(migration=m, user=people["operator"])
    for m in (second, third):
        assert wait_for_state(m, ["aborted", "failed"], why=why).state == "aborted"


def test_abort_of_a_queued_migration_removes_it_from_the_queue(domains, people, worker, second_worker):
    vms = small_vms(domains, 4)
    host = make_hypervisor([vm.backups for vm in vms])
    why = lambda: worker_logs(worker, second_worker)  # noqa: E731
    running = [request(people, host, vm, bandwidth_mib=1) for vm in vms[:2]]
    for m in running:
        wait_for_state(m, "copying", why=why)
    first_queued = wait_for_state(request(people, host, vms[2]), "queued", why=why)
    second_queued = wait_for_state(request(people, host, vms[3]), "queued", why=why)
    assert rules.slot_for(Migration.objects.select_related("hypervisor").get(pk=second_queued.pk)).position == 2

    migration_abort(migration=first_queued, user=people["operator"])
    assert Migration.objects.get(pk=first_queued.pk).state == "aborted"
    event = AuditEvent.objects.get(migration=first_queued, event_type="aborted")
    assert event.details == {"removed_from_queue": True, "position": 1} and event.actor_name == "operator"
    assert rules.slot_for(Migration.objects.select_related("hypervisor").get(pk=second_queued.pk)).position == 1
    assert not (vms[2].backups / "copy.qcow2").exists()

    # The one left in the queue starts when a running copy is aborted.
    migration_abort(migration=running[0], user=people["operator"])
    wait_for_state(running[0], "aborted", why=why)
    wait_for_state(second_queued, ["copying", "ready"], why=why)
    for m in (running[1], second_queued):
        migration_abort(migration=m, user=people["operator"])
        assert wait_for_state(m, ["aborted", "failed"], why=why).state == "aborted"


def job_bandwidth(name: str) -> int | None:
    """The speed libvirt reports for the disk's block job, in MiB/s (`--raw`; None: no job)."""
    done = subprocess.run(["virsh", "-c", URI, "blockjob", name, "vda", "--raw"], capture_output=True, text=True)
    match = re.search(r"bandwidth=(\d+)", done.stdout)
    return int(match.group(1)) if match else None


def test_a_roots_bandwidth_total_is_shared_among_its_copies_and_reapplied(domains, people, worker):
    """Total 2 MiB/s on the root: one copy gets 2, two get 1 each, and when one ends the
    other is given 2 again, by the worker that drives it."""
    vms = small_vms(domains, 2)
    shared = domains.root / "shared"
    shared.mkdir()
    host = make_hypervisor([shared])
    setting.hypervisor_set_limits(hypervisor=host, user=people["admin"], max_copies=2, roots={str(shared): (2, 2)})
    host.refresh_from_db()

    def request_into_shared(vm) -> Migration:
        return migration_request(
            user=people["operator"],
            hypervisor=host,
            domain_uuid=vm.uuid,
            disks=[DiskRequest("vda", str(shared / f"{vm.name}.qcow2"))],
        )

    first = wait_for_state(request_into_shared(vms[0]), "copying")
    wait_until(lambda: job_bandwidth(vms[0].name) == 2, "the first copy at the whole 2 MiB/s")
    second = wait_for_state(request_into_shared(vms[1]), "copying")
    wait_until(lambda: job_bandwidth(vms[1].name) == 1, "the second copy at half the total")
    wait_until(lambda: job_bandwidth(vms[0].name) == 1, "the first copy slowed to half the total")
    assert AuditEvent.objects.filter(migration=first, event_type="bandwidth_shared").exists()

    migration_abort(migration=second, user=people["operator"])
    wait_for_state(second, "aborted")
    wait_until(lambda: job_bandwidth(vms[0].name) == 2, "the first copy back at the whole total")
    shares = [e.details["mib_per_disk"] for e in AuditEvent.objects.filter(migration=first, event_type="bandwidth_shared")]
    assert shares[-2:] == [{"vda": 1}, {"vda": 2}]
    migration_abort(migration=first, user=people["operator"])
    assert wait_for_state(first, ["aborted", "failed"]).state == "aborted"
