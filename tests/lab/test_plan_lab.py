"""An evacuation plan on the real lab: a directory holding a seed-chain guest and a two-disk
guest is evacuated to a target root. The plan is built and preflighted against libvirt,
approved once (its approval covers the pivots), copies run at once, the pivots wait for the
maintenance window; when an approver opens the window they pivot, and each guest's data is
intact on its new disks."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from blockmig.errors import Refused
from blockmig.models import AuditEvent, Migration, Plan
from blockmig.plans.actions import plan_approve, plan_set_window
from blockmig.plans.build import plan_build
from hosts.lab.seed import list_files_in_image
from hosts.sync.hypervisor import hypervisor_sync
from tests.helpers import wait_for_state, wait_until
from tests.lab.engine_helpers import chain_paths, has_block_job, make_hypervisor

pytestmark = pytest.mark.lab

MIB = 2**20
PATTERNS = {"vda": "0xa1", "vdb": "0xb2"}


def read_pattern(path: str, pattern: str) -> bool:
    """The first MiB of the image reads as `pattern` (qemu-io -U: the guest holds the file)."""
    done = subprocess.run(
        ["qemu-io", "-U", "-r", "-f", "qcow2", "-c", f"read -P {pattern} 0 1M", path], capture_output=True, text=True
    )
    return done.returncode == 0 and "Pattern verification failed" not in done.stdout


@pytest.fixture
def target_root():
    root = Path("/var/tmp") / f"blockmig-plan-target-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    root.mkdir(parents=True)
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=False)


def test_plan_with_a_window_copies_at_once_and_pivots_only_in_the_window(domains, people, worker, target_root):
    seed = domains.seed("planseed")
    two = domains.images(
        "plantwo", [(t, "qcow2", 64 * MIB, f"write -P {p} 0 1M") for t, p in PATTERNS.items()]
    )  # the two-disk guest
    host = make_hypervisor([target_root])
    assert hypervisor_sync(host).ok

    now = timezone.now()
    plan = plan_build(
        user=people["operator"],
        hypervisor=host,
        source_kind="root",
        source_root=str(domains.root),
        target_root=str(target_root),
        mode="shallow",
        pivot_policy="plan",
        window_start=now + timedelta(hours=1),
        window_end=now + timedelta(hours=2),
    )
    moving = {f"{i.domain_name}/{i.target}": i for i in plan.items.all() if not i.blocked_reason}
    assert set(moving) == {f"{seed.name}/vda", f"{two.name}/vda", f"{two.name}/vdb"}
    for item in moving.values():
        assert item.destination.startswith(f"{target_root}/") and item.bytes_to_copy > 0
    assert len({i.destination for i in moving.values()}) == 3
    assert plan.free_at_target and plan.bytes_total == sum(i.bytes_to_copy for i in moving.values())

    plan = plan_approve(plan=plan, user=people["approver"])
    assert plan.state == "running"
    migrations = list(Migration.objects.filter(plan=plan).order_by("pk"))
    assert len(migrations) == 2  # one per domain: the two-disk guest's disks pivot together
    assert {m.requested_by.username for m in migrations} == {"operator"}

    # Copies run at once (within the host's limits); ready mirrors wait for the window.
    def settled():
        states = set(Migration.objects.filter(plan=plan).values_list("state", flat=True))
        assert not states & {"failed", "aborted", "pivoting", "completed"}, states
        return "ready" in states and states <= {"ready", "queued"}

    wait_until(settled, "the plan's copies ready (or queued behind them)", timeout=120)
    time.sleep(3)  # several engine looks at the shut window; none may pivot
    assert set(Migration.objects.filter(plan=plan).values_list("state", flat=True)) <= {"ready", "queued"}
    assert seed.sources()["vda"] == str(seed.disks[0].path)
    assert two.sources() == {d.target: str(d.path) for d in two.disks}

    plan_set_window(plan=plan, user=people["approver2"], window_start=timezone.now() - timedelta(minutes=1), window_end=None)
    for migration in migrations:
        migration = wait_for_state(migration, ["completed", "failed", "aborted"], timeout=180)
        assert migration.state == "completed", migration.failure_reason
        assert migration.approved_by == people["approver"]  # the plan's approval covered it

    plan.refresh_from_db()
    assert plan.state == "done"
    seed_copy = moving[f"{seed.name}/vda"].destination
    assert seed.sources() == {"vda": seed_copy}
    assert seed.sources(inactive=True) == {"vda": seed_copy}
    assert chain_paths(seed_copy)[1:] == [str(seed.directory / "snap1.qcow2"), str(seed.directory / "base.qcow2")]
    assert list_files_in_image(seed_copy) == ["bar", "baz", "foo"]
    for target, pattern in PATTERNS.items():
        copy = moving[f"{two.name}/{target}"].destination
        assert two.sources()[target] == copy
        assert read_pattern(copy, pattern), f"{copy} lost the guest's data"

    window_opened = AuditEvent.objects.get(event_type="plan_window_changed", details__plan=plan.pk)
    pivots = AuditEvent.objects.filter(event_type="plan_pivot", migration__plan=plan)
    assert pivots.count() == 2
    for pivot in pivots:
        assert pivot.pk > window_opened.pk and pivot.details["policy"] == "plan_approval"
    assert not AuditEvent.objects.filter(migration__plan=plan, to_state="pivoting", pk__lt=window_opened.pk).exists()
    trail = list(AuditEvent.objects.filter(details__plan=plan.pk).values_list("event_type", flat=True))
    for step in ("plan_created", "plan_approved", "plan_running", "plan_window_changed", "plan_done"):
        assert step in trail, trail


@pytest.fixture
def tiny_root():
    """A 1 MiB filesystem (tmpfs) as a target root: too small for any plan."""
    root = Path("/var/tmp") / f"blockmig-plan-tiny-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    root.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], check=True)
    yield root
    subprocess.run(["umount", str(root)], check=False)
    root.rmdir()


def test_preflight_lists_what_cannot_move_and_refuses_what_does_not_fit(domains, people, target_root, tiny_root):
    stopped = domains.images("planoff", [("vda", "qcow2", 16 * MIB, None)])
    subprocess.run(["virsh", "-c", "qemu:///system", "destroy", stopped.name], check=True, capture_output=True)
    busy = domains.images("planjob", [("vda", "qcow2", 64 * MIB, "write -P 0x5a 0 32M")])
    outside_copy = busy.directory / "virsh-copy.qcow2"
    subprocess.run(
        [
            "virsh",
            "-c",
            "qemu:///system",
            "blockcopy",
            busy.name,
            "vda",
            str(outside_copy),
            "--transient-job",
            "--bandwidth",
            "1",
        ],
        check=True,
        capture_output=True,
    )
    fine = domains.images("planok", [("vda", "qcow2", 16 * MIB, "write -P 0x11 0 4M")])
    host = make_hypervisor([target_root, tiny_root])
    assert hypervisor_sync(host).ok

    plan = plan_build(
        user=people["operator"],
        hypervisor=host,
        source_kind="root",
        source_root=str(domains.root),
        target_root=str(target_root),
        mode="shallow",
    )
    reasons = {i.domain_name: i.blocked_reason for i in plan.items.all()}
    assert reasons[fine.name] == ""
    assert "not running" in reasons[stopped.name]
    assert "block job" in reasons[busy.name] and "already running" in reasons[busy.name]
    assert plan.bytes_total == plan.items.get(domain_name=fine.name).bytes_to_copy
    assert has_block_job(busy.name, "vda")  # the outside job is left alone

    with pytest.raises(Refused, match=f"Not enough free space in {tiny_root}"):
        plan_build(
            user=people["operator"],
            hypervisor=host,
            source_kind="domains",
            domain_uuids=[fine.uuid],
            target_root=str(tiny_root),
        )
    assert Plan.objects.count() == 1
    assert not list(tiny_root.iterdir())  # nothing was created there
