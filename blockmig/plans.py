"""Storage evacuation plans: every write goes through these functions.

    plan_build(*, user, hypervisor, source_kind, target_root, mode="shallow",
               pivot_policy="each", source_root="", domain_uuids=(), window_start=None,
               window_end=None) -> Plan                        # operator; preflight of the whole plan
    plan_approve(*, plan, user) -> Plan                          # approver, not the author
    plan_discard(*, plan, user) -> Plan                          # a draft nobody will run
    plan_pause(*, plan, user) / plan_resume(*, plan, user) -> Plan   # operator
    plan_abort(*, plan, user) -> Plan                            # aborts each active migration
    plan_set_window(*, plan, user, window_start, window_end) -> Plan

Like blockmig.lifecycle, each commits its state change and audit event in one transaction
and publishes after the commit; each refusal is audited and raised as Refused with a
message that names what to fix. A plan's migrations are ordinary migrations, requested
through `lifecycle.migration_request` (its preflight, its audit) with `plan=` set; the copy
limits and the queue hold them (blockmig.limits, asking blockmig.plan_rules whether the plan
is paused) and the engine pivots them when the plan allows (blockmig.plan_rules).
"""

from __future__ import annotations

import functools
import os
import posixpath
from collections import defaultdict
from datetime import datetime
from typing import NoReturn

from django.db import transaction
from django.db.models import Prefetch
from django.utils import timezone

from blockmig import lifecycle
from blockmig.audit import audit_record
from blockmig.errors import Refused
from blockmig.limits.queue_push import queue_changed_on_commit
from blockmig.models import Migration, MigrationDisk, Plan, PlanDisk
from blockmig.plan_building import (
    SOURCE_DOMAINS,
    SOURCE_HOST,
    SOURCE_ROOT,
    DiskFacts,
    Selected,
    bytes_to_copy,
    destination_for,
    inside,
    select_disks,
    space_problem,
)
from blockmig.plan_progress import plan_changed_on_commit, plan_finish
from blockmig.plan_rules import window_problem
from blockmig.plan_states import PLAN_UNDER_WAY, PlanState, plan_may, plan_next_state
from blockmig.preflight.host import check_disk_movable, check_on_host
from blockmig.preflight.options import check_options
from blockmig.preflight.records import DiskRequest
from blockmig.preflight.shape import check_destination_shape
from blockmig.states import ACTIVE_STATES, abort_target
from blockmig.wake import wake_workers
from hosts.adapter import BlockJobHost, ConnectFailure, LibvirtFailure, open_block_jobs, uri_is_local
from hosts.domxml import parse_disks
from hosts.models import ChainLayer, Disk, Hypervisor

__all__ = [
    "plan_abort",
    "plan_approve",
    "plan_build",
    "plan_discard",
    "plan_pause",
    "plan_resume",
    "plan_set_window",
]


# -- refusals ----------------------------------------------------------------------------------


def _refuse(
    *, user, hypervisor: Hypervisor, action: str, message: str, plan: Plan | None = None, field=None, extra: dict | None = None
) -> NoReturn:
    """A refused plan action is audited (committed although the action fails), then raised."""
    with transaction.atomic():
        audit_record(
            event_type="refused",
            actor=user,
            hypervisor_name=hypervisor.name,
            details={"action": action, "reason": message, **({"plan": plan.pk} if plan else {}), **(extra or {})},
        )
    raise Refused(message, field)


def _audit(plan: Plan, event_type: str, *, user=None, from_state: str = "", details: dict | None = None) -> None:
    audit_record(
        event_type=event_type,
        actor=user,
        hypervisor_name=plan.hypervisor.name,
        from_state=from_state,
        to_state=plan.state,
        details={"plan": plan.pk, **(details or {})},
    )


def _move(plan: Plan, to: str, *, event_type: str, user=None, details: dict | None = None, **fields) -> Plan:
    """Move a plan through its state machine with its audit event (caller's transaction)."""
    locked = Plan.objects.select_for_update().select_related("hypervisor").get(pk=plan.pk)
    previous = locked.state
    locked.state = plan_next_state(previous, to)
    for name, value in fields.items():
        setattr(locked, name, value)
    locked.save(update_fields=["state", *fields])
    _audit(locked, event_type, user=user, from_state=previous, details=details)
    plan_changed_on_commit(locked.pk)
    return locked


# -- building ----------------------------------------------------------------------------------


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


def _check_on_host(host: BlockJobHost, hypervisor: Hypervisor, item: PlanDisk, *, kind: str, root: str, mode: str) -> str:
    """Preflight's own checks for one disk of the plan; the reason it cannot move, or ""."""
    try:
        check_destination_shape(item.destination, hypervisor.allowed_roots)
        planned = check_on_host(
            host,
            hypervisor=hypervisor,
            domain_uuid=item.domain_uuid,
            disks=[DiskRequest(item.target, item.destination)],
            reuse_destination=False,
            synchronous_writes=False,
            allowed_roots=hypervisor.allowed_roots,
        ).disks[0]
    except Refused as refused:
        return refused.message
    # The inventory may be older than the host: the live chain must still be the plan's.
    if kind == SOURCE_ROOT:
        layers = planned.source_chain or [planned.source_path]
        moving = layers[:1] if mode == "shallow" else layers
        if not all(inside(path, root) for path in moving):
            return (
                f"{item.domain_name}/{item.target} now runs on {planned.source_path}, no longer (all) in {root}: "
                "refresh the host and build the plan again."
            )
    item.source_path = planned.source_path
    return ""


def _check_live_disks(host: BlockJobHost, items: list[PlanDisk]) -> None:
    """Read-only, shareable disks and removable media, from the live XML (preflight's rule)."""
    by_domain: dict[str, list[PlanDisk]] = defaultdict(list)
    for item in items:
        if not item.blocked_reason:
            by_domain[item.domain_uuid].append(item)
    for uuid, found in by_domain.items():
        try:
            live = {d.target: d for d in parse_disks(host.live_xml(uuid))}
        except LibvirtFailure:
            continue  # check_on_host says what happened to the domain
        for item in found:
            if item.target in live:
                try:
                    check_disk_movable(live[item.target], item.domain_name)
                except Refused as refused:
                    item.blocked_reason = refused.message


def _preflight(plan: Plan, items: list[PlanDisk], *, timeout: float) -> tuple[int | None, str]:
    """Run preflight on every disk of the plan in one connection: sets each item's
    blocked_reason; returns the free bytes at the target and a whole-plan refusal ("" = none)."""
    hypervisor = plan.hypervisor
    try:
        with open_block_jobs(hypervisor.uri, timeout) as host:
            _check_live_disks(host, items)
            for item in items:
                if not item.blocked_reason:
                    item.blocked_reason = _check_on_host(
                        host, hypervisor, item, kind=plan.source_kind, root=plan.source_root, mode=plan.mode
                    )
            space = host.free_space(plan.target_root)
    except ConnectFailure as failure:
        return None, f"{hypervisor.name} is unreachable: {failure.message}"
    except LibvirtFailure as failure:
        return None, f"{hypervisor.name} refused a preflight check: {failure}"
    free = space[0] if space else None
    moving = [i for i in items if not i.blocked_reason]
    if not moving:
        if not items:
            return free, "Nothing to move: no disk of the chosen source is in this plan's scope."
        return free, "No disk of this plan can move: " + " ".join(sorted({i.blocked_reason for i in items}))[:900]
    return free, space_problem(needed=sum(i.bytes_to_copy for i in moving), free=free, target_root=plan.target_root)


def _check_window(start: datetime | None, end: datetime | None) -> None:
    if start is None and end is None:
        return
    if start is None:
        raise Refused("Give the window's start as well as its end (or neither, for no window).", "window_start")
    if end is not None and end <= start:
        raise Refused("The window must end after it starts.", "window_end")
    if end is not None and end <= timezone.now():
        raise Refused("The window has already ended: give one that ends in the future.", "window_end")


def _check_source(hypervisor: Hypervisor, kind: str, source_root: str, target_root: str, domain_uuids) -> tuple[str, str]:
    if kind not in (SOURCE_ROOT, SOURCE_HOST, SOURCE_DOMAINS):
        raise Refused("Evacuate a storage directory, a host, or chosen domains.", "source_kind")
    roots = [posixpath.normpath(r) for r in hypervisor.allowed_roots or []]
    target = posixpath.normpath(target_root.strip()) if target_root and target_root.strip() else ""
    if not roots:
        raise Refused(f"{hypervisor.name} has no allowed storage roots yet; an admin must add one first.", "target_root")
    if target not in roots:
        raise Refused(f"The target must be one of {hypervisor.name}'s allowed roots ({', '.join(roots)}).", "target_root")
    source = ""
    if kind == SOURCE_ROOT:
        source = (source_root or "").strip()
        if not source.startswith("/") or ".." in source.split("/"):
            raise Refused("Give the directory to evacuate as an absolute path without “..”.", "source_root")
        source = posixpath.normpath(source)
        if source == target or inside(target, source):
            raise Refused(f"The target {target} lies in {source}, the directory being evacuated: choose another.", "target_root")
    if kind == SOURCE_DOMAINS and not domain_uuids:
        raise Refused("Choose at least one domain to evacuate.", "domain_uuids")
    return source, target


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
        _check_window(window_start, window_end)
        source, target = _check_source(hypervisor, source_kind, source_root, target_root, domain_uuids)
    except Refused as refused:
        _refuse(user=user, hypervisor=hypervisor, action="plan_build", message=refused.message, field=refused.field, extra=asked)
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
    free, problem = _preflight(plan, items, timeout=timeout)
    if problem:
        _refuse(user=user, hypervisor=hypervisor, action="plan_build", message=problem, extra=asked)
    plan.free_at_target = free
    plan.bytes_total = sum(i.bytes_to_copy for i in items if not i.blocked_reason)
    with transaction.atomic():
        plan.save()
        for item in items:
            item.plan = plan
        PlanDisk.objects.bulk_create(items)
        _audit(
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


# -- review and running -----------------------------------------------------------------------


def _load(plan: Plan) -> Plan:
    return Plan.objects.select_related("hypervisor", "author", "approved_by").get(pk=plan.pk)


def plan_approve(*, plan: Plan, user, timeout: float = 10.0) -> Plan:
    """Four eyes: an approver who is not the author. The whole plan is preflighted again
    (time passed since it was built); then each domain's disks are requested as one
    migration, and the plan runs."""
    plan = _load(plan)
    host = plan.hypervisor

    def refuse(message: str):
        _refuse(user=user, hypervisor=host, action="plan_approve", message=message, plan=plan)

    if not user.has_perm("blockmig.approve_plan"):
        refuse("Only a user with the approver role can approve an evacuation plan.")
    if plan.author_id == user.pk:
        refuse("You built this plan, so another approver must approve it (four eyes).")
    if plan.state != PlanState.DRAFT:
        refuse(f"Plan #{plan.pk} is {plan.state}: only a draft can be approved.")
    if plan.window_end is not None and plan.window_end <= timezone.now():
        refuse(f"Plan #{plan.pk}'s window has already ended: its author must set a new one before it can be approved.")
    items = list(plan.items.all())
    moving = [i for i in items if not i.blocked_reason]
    recheck = [PlanDisk(**{f.attname: getattr(i, f.attname) for f in PlanDisk._meta.concrete_fields}) for i in moving]
    free, problem = _preflight(plan, recheck, timeout=timeout)
    changed = [f"{i.domain_name}/{i.target}: {i.blocked_reason}" for i in recheck if i.blocked_reason]
    if changed:
        problem = "Since the plan was built: " + " ".join(changed) + " Build the plan again."
    if problem:
        refuse(problem)
    with transaction.atomic():
        plan = _move(
            plan,
            PlanState.APPROVED,
            event_type="plan_approved",
            user=user,
            details={"approved_by": user.get_username(), "free_at_target": free},
            approved_by=user,
            approved_at=timezone.now(),
        )
    _request_migrations(plan, moving)
    with transaction.atomic():
        plan = _move(plan, PlanState.RUNNING, event_type="plan_running", details={"migrations": plan.migrations.count()})
        if not Migration.objects.filter(plan=plan, state__in=[s.value for s in ACTIVE_STATES]).exists():
            plan_finish(plan)  # every request was refused, or everything ended already
    return _load(plan)


def _request_migrations(plan: Plan, moving: list[PlanDisk]) -> None:
    """One migration per domain (its disks pivot together), through the request form's own
    lifecycle function; a refusal is recorded on the plan's disks and the rest go on."""
    by_domain: dict[str, list[PlanDisk]] = defaultdict(list)
    for item in moving:
        by_domain[item.domain_uuid].append(item)
    for uuid, found in by_domain.items():
        try:
            migration = lifecycle.migration_request(
                user=plan.author,
                hypervisor=plan.hypervisor,
                domain_uuid=uuid,
                disks=[DiskRequest(i.target, i.destination) for i in found],
                mode=plan.mode,
                plan=plan,
            )
        except Refused as refused:
            with transaction.atomic():
                PlanDisk.objects.filter(pk__in=[i.pk for i in found]).update(request_error=refused.message)
                _audit(
                    plan,
                    "plan_migration_refused",
                    details={"domain": found[0].domain_name, "disks": [i.target for i in found], "reason": refused.message},
                )
                plan_changed_on_commit(plan.pk)
            continue
        PlanDisk.objects.filter(pk__in=[i.pk for i in found]).update(migration=migration)


def plan_discard(*, plan: Plan, user) -> Plan:
    plan = _load(plan)
    if not user.has_perm("blockmig.change_plan") and not user.has_perm("blockmig.approve_plan"):
        _refuse(user=user, hypervisor=plan.hypervisor, action="plan_discard", plan=plan,
                message="You need the operator or approver role to discard a plan.")  # fmt: skip
    if plan.state != PlanState.DRAFT:
        _refuse(user=user, hypervisor=plan.hypervisor, action="plan_discard", plan=plan,
                message=f"Plan #{plan.pk} is {plan.state}: only a draft can be discarded; abort a running plan.")  # fmt: skip
    with transaction.atomic():
        return _move(plan, PlanState.ABORTED, event_type="plan_discarded", user=user, finished_at=timezone.now())


def _pause_or_resume(plan: Plan, user, *, to: str, action: str, event_type: str) -> Plan:
    plan = _load(plan)
    if not user.has_perm("blockmig.change_plan"):
        _refuse(user=user, hypervisor=plan.hypervisor, action=action, plan=plan,
                message=f"You need the operator role to {action.removeprefix('plan_')} a plan.")  # fmt: skip
    if not plan_may(plan.state, to):
        verb = "paused" if to == PlanState.PAUSED else "resumed"
        _refuse(user=user, hypervisor=plan.hypervisor, action=action, plan=plan,
                message=f"Plan #{plan.pk} is {plan.state}: only a {'running' if verb == 'paused' else 'paused'} plan can be {verb}.")  # fmt: skip
    with transaction.atomic():
        plan = _move(plan, to, event_type=event_type, user=user)
        _queue_changed_on_commit(plan)
    return plan


def _queue_changed_on_commit(plan: Plan) -> None:
    """Queued migrations re-read what they wait for (a resumed plan's copies may start)."""
    queue_changed_on_commit(plan.hypervisor_id)


def plan_pause(*, plan: Plan, user) -> Plan:
    """No new copies start (copies already running go on, and ready ones still pivot)."""
    return _pause_or_resume(plan, user, to=PlanState.PAUSED, action="plan_pause", event_type="plan_paused")


def plan_resume(*, plan: Plan, user) -> Plan:
    return _pause_or_resume(plan, user, to=PlanState.RUNNING, action="plan_resume", event_type="plan_resumed")


def plan_abort(*, plan: Plan, user) -> Plan:
    """Abort every migration of the plan that has not pivoted (through the lifecycle: each
    audited, each guest stays on its source); the plan is aborted when the last one ends.
    Migrations already pivoting finish."""
    plan = _load(plan)
    if not user.has_perm("blockmig.abort_migration"):
        _refuse(user=user, hypervisor=plan.hypervisor, action="plan_abort", plan=plan,
                message="You need the operator or approver role to abort a plan.")  # fmt: skip
    if plan.state == PlanState.DRAFT:
        return plan_discard(plan=plan, user=user)
    if not plan_may(plan.state, PlanState.ABORTING):
        _refuse(user=user, hypervisor=plan.hypervisor, action="plan_abort", plan=plan,
                message=f"Plan #{plan.pk} is {plan.state}: there is nothing left to abort.")  # fmt: skip
    with transaction.atomic():
        plan = _move(plan, PlanState.ABORTING, event_type="plan_abort_requested", user=user)
    # One migration at a time, each in its own transaction: the plan's row is not held
    # while a migration's is (the engine locks them the other way round).
    for migration in Migration.objects.filter(plan=plan, state__in=[s.value for s in ACTIVE_STATES]).order_by("pk"):
        if abort_target(migration.state) is None:
            continue  # pivoting: it finishes on the copy
        try:
            lifecycle.migration_abort(migration=migration, user=user)
        except Refused:
            pass  # it moved on (pivoting, or ended) meanwhile: audited by the lifecycle
    with transaction.atomic():
        locked = Plan.objects.select_for_update().select_related("hypervisor").get(pk=plan.pk)
        if (
            locked.state == PlanState.ABORTING
            and not Migration.objects.filter(plan=plan, state__in=[s.value for s in ACTIVE_STATES]).exists()
        ):
            plan_finish(locked)
    return _load(plan)


def plan_set_window(*, plan: Plan, user, window_start: datetime | None, window_end: datetime | None) -> Plan:
    """Before the review its author (an operator) may change the window; once approved,
    only an approver may, since the window is part of what was approved."""
    plan = _load(plan)
    approved = plan.state != PlanState.DRAFT
    perm = "blockmig.approve_plan" if approved else "blockmig.change_plan"
    if not user.has_perm(perm):
        who = "an approver" if approved else "an operator"
        _refuse(user=user, hypervisor=plan.hypervisor, action="plan_set_window", plan=plan,
                message=f"Only {who} can change the window of a plan that is {plan.state}.")  # fmt: skip
    if plan.state in (PlanState.DONE, PlanState.ABORTED, PlanState.ABORTING):
        _refuse(user=user, hypervisor=plan.hypervisor, action="plan_set_window", plan=plan,
                message=f"Plan #{plan.pk} is {plan.state}: its window no longer matters.")  # fmt: skip
    try:
        _check_window(window_start, window_end)
    except Refused as refused:
        _refuse(user=user, hypervisor=plan.hypervisor, action="plan_set_window", plan=plan, message=refused.message,
                field=refused.field)  # fmt: skip

    def iso(value):
        return value.isoformat() if value else None

    with transaction.atomic():
        locked = Plan.objects.select_for_update().select_related("hypervisor").get(pk=plan.pk)
        before = [iso(locked.window_start), iso(locked.window_end)]
        Plan.objects.filter(pk=plan.pk).update(window_start=window_start, window_end=window_end)
        locked.window_start, locked.window_end = window_start, window_end
        _audit(
            locked,
            "plan_window_changed",
            user=user,
            from_state=locked.state,
            details={"from": before, "to": [iso(window_start), iso(window_end)], "now": window_problem(locked) or "open"},
        )
        plan_changed_on_commit(locked.pk)
        # Ready migrations re-check at their next look (the engine polls every half second).
        for migration_id in Migration.objects.filter(plan=plan, state="ready").values_list("pk", flat=True):
            transaction.on_commit(functools.partial(wake_workers, migration_id))
    return _load(plan)
