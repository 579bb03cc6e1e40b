"""Setting a host's copy limits (the admin's write, from its policy page): the bounds a
limit may take, and the audited change. Apart from the rules (blockmig.limits.rules), which
only read what is set."""

from __future__ import annotations

from django.db import transaction

from blockmig.audit import audit_record
from blockmig.errors import Refused
from blockmig.limits.queue_push import queue_changed_on_commit
from blockmig.preflight.options import MAX_BANDWIDTH_MIB
from hosts.models import Hypervisor

MAX_COPIES_LIMIT = 1000  # a sanity bound for the form, far above any host's real capacity


def may_set_limits(user) -> bool:
    return user.is_superuser or user.has_perm("hosts.change_hypervisor")


def _check_count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COPIES_LIMIT:
        raise Refused(f"{what} must be a whole number from 0 (no limit) to {MAX_COPIES_LIMIT}.")
    return value


def hypervisor_set_limits(*, hypervisor: Hypervisor, user, max_copies: int, roots: dict[str, tuple[int, int]]) -> None:
    """An admin sets the host's copy limit and each root's (copies at once, shared MiB/s).
    Audited (also when refused); queued migrations that now fit start at the next claim."""
    asked = {"max_copies": max_copies, "roots": {r: {"max_copies": c, "bandwidth_mib": b} for r, (c, b) in roots.items()}}
    try:
        if not may_set_limits(user):
            raise Refused("Only an admin can change a host's copy limits.")
        _check_count(max_copies, "Copies at once on the host")
        unknown = sorted(set(roots) - set(hypervisor.allowed_roots or []))
        if unknown:
            raise Refused(f"{', '.join(unknown)} is not an allowed root of {hypervisor.name}: add it to the host first.")
        for root, (copies, bandwidth) in roots.items():
            _check_count(copies, f"Copies at once into {root}")
            if isinstance(bandwidth, bool) or not isinstance(bandwidth, int) or not 0 <= bandwidth <= MAX_BANDWIDTH_MIB:
                raise Refused(
                    f"The bandwidth total of {root} must be a whole number of MiB/s from 0 (none) to {MAX_BANDWIDTH_MIB}."
                )
    except Refused as refused:
        with transaction.atomic():
            audit_record(
                event_type="refused",
                actor=user,
                hypervisor_name=hypervisor.name,
                details={"action": "set_limits", "reason": refused.message, **asked},
            )
        raise
    with transaction.atomic():
        locked = Hypervisor.objects.select_for_update().get(pk=hypervisor.pk)
        was_copies = locked.max_copies
        was_roots = {r: locked.root_limit(r) for r in roots}
        stored = {r: {"max_copies": c, "bandwidth_mib": b} for r, (c, b) in roots.items()}
        Hypervisor.objects.filter(pk=hypervisor.pk).update(max_copies=max_copies, root_limits=stored)
        hypervisor.max_copies, hypervisor.root_limits = max_copies, stored
        changes: dict[str, dict] = {}
        if was_copies != max_copies:
            changes["max_copies"] = {"from": was_copies, "to": max_copies}
        for root, limit in roots.items():
            if was_roots[root] != tuple(limit):
                was = was_roots[root]
                changes[root] = {"from": {"max_copies": was[0], "bandwidth_mib": was[1]}, "to": stored[root]}
        audit_record(event_type="limits_changed", actor=user, hypervisor_name=hypervisor.name, details={"changed": changes})
        queue_changed_on_commit(hypervisor.pk)
