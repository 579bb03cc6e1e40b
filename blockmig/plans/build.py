"""Building an evacuation plan: the host's disks as the last sync saw them, which of them the
plan takes (blockmig.plans.building), each one's destination and bytes, its checks
(blockmig.plans.checks), then the draft saved for review with its audit event. Apart from
what is done to a built plan (blockmig.plans.actions)."""

from __future__ import annotations

import os
from datetime import datetime

from django.db import transaction
from django.db.models import Prefetch

from blockmig.errors import Refused
from blockmig.models import MigrationDisk, Plan, PlanDisk
from blockmig.plans.building import SOURCE_DOMAINS, DiskFacts, Selected, bytes_to_copy, destination_for, select_disks
from blockmig.plans.checks import check_source, check_window, preflight_plan
from blockmig.plans.progress import plan_changed_on_commit
from blockmig.plans.recording import audit_and_refuse, audit_plan
from blockmig.plans.states import PLAN_UNDER_WAY, PlanState
from blockmig.preflight.options import check_options
from hosts.adapter import uri_is_local
from hosts.models import ChainLayer, Disk, Hypervisor

__all__ = ["plan_build"]


def _inventory_facts(hypervisor: Hypervisor, domain_uuids: list[str] | None) -> tuple[list[DiskFacts], dict[str, str]]:
    """The host's disks as the last sync saw them (sizes come from there), and each
    domain's state by uuid."""
    disks = Disk.objects.filter(domain__hypervisor=hypervisor).select_related("domain")
    if domain_uuids is not None:
        disks = disks.filter(domain__uuid__in=domain_uuids)
    disks = disks.prefetch_related(Prefetch("layers", queryset=ChainLayer.objects.order_by("depth")))
    facts, states = [], {}
    for disk in disks.order_by("domain__name", "target"):
        layers = list(disk.layers.all())
        states[disk.domain.uuid] = disk.domain.state
        facts.append(
            DiskFacts(
                domain_uuid=disk.domain.uuid,
                domain_name=disk.domain.name,
                target=disk.target,
                device=disk.device,
                type=disk.type,
                source=disk.source,
                chain=tuple(layer.path for layer in layers if layer.path) or ((disk.source,) if disk.source else ()),
                sizes=tuple(layer.allocation for layer in layers if layer.path),
                capacity=layers[0].capacity if layers else None,
            )
        )
    return facts, states


def _taken_destinations(hypervisor: Hypervisor, exclude_plan: int | None = None) -> set[str]:
    """Destinations other plans and active migrations of this host already claim."""
    taken = set(MigrationDisk.objects.filter(hypervisor=hypervisor, active=True).values_list("destination", flat=True))
    others = PlanDisk.objects.filter(
        plan__hypervisor=hypervisor, plan__state__in=[PlanState.DRAFT, *PLAN_UNDER_WAY], blocked_reason=""
    )
    if exclude_plan is not None:
        others = others.exclude(plan_id=exclude_plan)
    return taken | set(others.values_list("destination", flat=True))


def plan_build(
    *,
    user,
    hypervisor: Hypervisor,
    source_kind: str,
    target_root: str,
    mode: str = "shallow",
    pivot_policy: str = Plan.PivotPolicy.EACH,
    source_root: str = "",
    domain_uuids=(),
    window_start: datetime | None = None,
    window_end: datetime | None = None,
    timeout: float = 10.0,
) -> Plan:
    """Build and preflight a plan as a draft for review. Refused (and audited, nothing
    saved) when nothing can move, the sum does not fit the target, or the request is wrong."""
    asked = {"source_kind": source_kind, "source_root": source_root, "target_root": target_root, "mode": mode}
    try:
        if not user.has_perm("blockmig.add_plan"):
            raise Refused("You need the operator role to build an evacuation plan.")
        check_options(mode=mode, dest_format="qcow2", granularity=None, buf_size=None)
        if pivot_policy not in Plan.PivotPolicy.values:
            raise Refused("Choose whether each pivot needs an approval or the plan's approval covers them.", "pivot_policy")
        if not hypervisor.enabled:
            raise Refused(f"{hypervisor.name} is disabled: an admin must enable it first.")
        check_window(window_start, window_end)
        source, target = check_source(hypervisor, source_kind, source_root, target_root, domain_uuids)
    except Refused as refused:
        audit_and_refuse(
            user=user, hypervisor=hypervisor, action="plan_build", message=refused.message, field=refused.field, extra=asked
        )
    uuids = list(domain_uuids) if source_kind == SOURCE_DOMAINS else None
    facts, _states = _inventory_facts(hypervisor, uuids)
    plan = Plan(
        hypervisor=hypervisor,
        author=user,
        source_kind=source_kind,
        source_root=source,
        domain_uuids=uuids or [],
        target_root=target,
        mode=mode,
        pivot_policy=pivot_policy,
        window_start=window_start,
        window_end=window_end,
    )
    items = _items(plan, select_disks(facts, kind=source_kind, mode=mode, root=source), exclude_plan=None)
    free, problem = preflight_plan(plan, items, timeout=timeout)
    if problem:
        audit_and_refuse(user=user, hypervisor=hypervisor, action="plan_build", message=problem, extra=asked)
    plan.free_at_target = free
    plan.bytes_total = sum(i.bytes_to_copy for i in items if not i.blocked_reason)
    with transaction.atomic():
        plan.save()
        for item in items:
            item.plan = plan
        PlanDisk.objects.bulk_create(items)
        audit_plan(
            plan,
            "plan_created",
            user=user,
            details={
                **asked,
                "pivot_policy": pivot_policy,
                "window": [window_start.isoformat() if window_start else None, window_end.isoformat() if window_end else None],
                "disks": {f"{i.domain_name}/{i.target}": i.destination for i in items if not i.blocked_reason},
                "staying": {f"{i.domain_name}/{i.target}": i.blocked_reason for i in items if i.blocked_reason},
                "bytes_total": plan.bytes_total,
                "free_at_target": free,
            },
        )
        plan_changed_on_commit(plan.pk)
    return plan


def _items(plan: Plan, selected: list[Selected], *, exclude_plan: int | None) -> list[PlanDisk]:
    taken = _taken_destinations(plan.hypervisor, exclude_plan)
    items = []
    for choice in selected:
        disk = choice.disk
        destination = "" if choice.reason else destination_for(plan.target_root, disk, taken, _exists_locally(plan))
        items.append(
            PlanDisk(
                domain_uuid=disk.domain_uuid,
                domain_name=disk.domain_name,
                target=disk.target,
                source_path=disk.source,
                destination=destination,
                bytes_to_copy=bytes_to_copy(disk, plan.mode),
                blocked_reason=choice.reason,
            )
        )
    return items


def _exists_locally(plan: Plan):
    """Names already on the host are skipped where the host is this machine; elsewhere
    preflight's own "already exists" check (libvirt's pools) has the last word."""
    if uri_is_local(plan.hypervisor.uri):
        return os.path.lexists
    return lambda _path: False
