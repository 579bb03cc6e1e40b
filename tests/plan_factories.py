"""Plans made straight in the database, for the tests of the plan pages, roles and the
plan's own lifecycle that need no host (building a plan against a real host is the lab's:
tests/lab/test_plan_lab.py)."""

from __future__ import annotations

from blockmig.models import Migration, MigrationDisk, Plan, PlanDisk
from hosts.models import Hypervisor

GIB = 2**30


def make_host(name: str = "h1") -> Hypervisor:
    return Hypervisor.objects.create(name=name, uri="qemu+tcp://unreachable.invalid/system", allowed_roots=["/new"])


def make_plan(
    author, host: Hypervisor | None = None, *, state: str = "draft", disks: int = 2, staying: int = 1, **fields
) -> Plan:
    host = host or make_host()
    plan = Plan.objects.create(
        hypervisor=host, author=author, source_kind="root", source_root="/old", target_root="/new", state=state, **fields
    )
    for n in range(disks):
        PlanDisk.objects.create(
            plan=plan,
            domain_uuid=f"00000000-0000-4000-8000-{n:012d}",
            domain_name=f"vm{n}",
            target="vda",
            source_path=f"/old/vm{n}.qcow2",
            destination=f"/new/vm{n}-vda.qcow2",
            bytes_to_copy=GIB,
        )
    for n in range(staying):
        PlanDisk.objects.create(
            plan=plan,
            domain_uuid=f"00000000-0000-4000-9000-{n:012d}",
            domain_name=f"off{n}",
            target="vda",
            source_path=f"/old/off{n}.qcow2",
            blocked_reason=f"off{n} is shutoff, not running: a block copy needs a running domain.",
        )
    plan.bytes_total = disks * GIB
    plan.save()
    return plan


def add_migrations(plan: Plan, states: list[str], *, done: int = 0) -> list[Migration]:
    """One migration per moving disk of `plan`, in the given states (as if requested);
    `done` bytes copied for those copying or ready."""
    made = []
    for item, state in zip(plan.items.filter(blocked_reason=""), states, strict=False):
        migration = Migration.objects.create(
            hypervisor=plan.hypervisor,
            domain_uuid=item.domain_uuid,
            domain_name=item.domain_name,
            state=state,
            requested_by=plan.author,
            plan=plan,
            bytes_total=GIB,
            bytes_done=done if state in ("copying", "ready") else 0,
            rate_bps=float(2**20) if state == "copying" else 0.0,
        )
        MigrationDisk.objects.create(
            migration=migration,
            hypervisor=plan.hypervisor,
            domain_uuid=item.domain_uuid,
            target=item.target,
            source_path=item.source_path,
            destination=item.destination,
            end=GIB,
            cur=done if state in ("copying", "ready") else 0,
            active=state not in ("completed", "failed", "aborted"),
        )
        item.migration = migration
        item.save(update_fields=["migration"])
        made.append(migration)
    return made
