"""What the inventory tells other apps about changes people make to it.

The audit trail lives in blockmig, which imports hosts; hosts announces and blockmig
listens (blockmig.receivers), so the inventory does not depend on the migration app.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Protocol

from django.db import transaction
from django.dispatch import Signal

from hosts.models import Hypervisor

# Sent inside the transaction that made the change, so a listener's writes commit with it.
# Arguments: hypervisor (the row, already deleted for "deleted"), user, action ("added",
# "changed" or "deleted"), details (a JSON-able dict: what the row holds, or what changed).
hypervisor_changed = Signal()

# Sent after the commit of a sync (or a failed one) that changed what is stored for a
# hypervisor: open pages redraw from the committed rows (blockmig.receivers pushes them).
# Argument: hypervisor_id.
inventory_changed = Signal()

# Fields a person sets; auto_pivot is a policy the migration app sets and audits on its
# own page, facts come from the host.
AUDITED_FIELDS = ("name", "uri", "allowed_roots", "enabled")


def hypervisor_values(hypervisor: Hypervisor) -> dict:
    return {name: getattr(hypervisor, name) for name in AUDITED_FIELDS}


def hypervisor_changes(before: dict, hypervisor: Hypervisor) -> dict:
    """field → {"from", "to"} for every audited field that differs from `before`."""
    after = hypervisor_values(hypervisor)
    return {name: {"from": before[name], "to": after[name]} for name in AUDITED_FIELDS if before.get(name) != after[name]}


def announce_hypervisor_added(hypervisor: Hypervisor, user, source: str) -> None:
    hypervisor_changed.send(
        sender=Hypervisor,
        hypervisor=hypervisor,
        user=user,
        action="added",
        details={"source": source, **hypervisor_values(hypervisor)},
    )


def announce_hypervisor_edited(hypervisor: Hypervisor, user, source: str, before: dict) -> None:
    """Nothing is sent when nothing a person sets changed (saving an unchanged form)."""
    changes = hypervisor_changes(before, hypervisor)
    if changes:
        hypervisor_changed.send(
            sender=Hypervisor,
            hypervisor=hypervisor,
            user=user,
            action="changed",
            details={"source": source, "changes": changes},
        )


def announce_hypervisor_deleted(hypervisor: Hypervisor, user, source: str, values: dict) -> None:
    hypervisor_changed.send(
        sender=Hypervisor,
        hypervisor=hypervisor,
        user=user,
        action="deleted",
        details={"source": source, **values},
    )


# Sent after every sync of a hypervisor, whether it worked or not (metrics count them:
# blockmig.receivers). Arguments: hypervisor, ok, error (str), duration (seconds).
sync_finished = Signal()


class SyncOutcome(Protocol):
    """What sync_finished reports of a sync's result (hosts.sync.hypervisor.SyncResult)."""

    @property
    def ok(self) -> bool: ...
    @property
    def error(self) -> str: ...
    @property
    def duration(self) -> float: ...


def reports_sync[R: SyncOutcome](sync: Callable[..., R]) -> Callable[..., R]:
    """Wraps hypervisor_sync so that each of its results is announced on sync_finished."""

    @wraps(sync)
    def wrapped(hypervisor, *args, **kwargs):
        result = sync(hypervisor, *args, **kwargs)
        sync_finished.send(sender=Hypervisor, hypervisor=hypervisor, ok=result.ok, error=result.error, duration=result.duration)
        return result

    return wrapped


def announce_inventory_changed(hypervisor_id: int) -> None:
    """Tell listeners once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: inventory_changed.send(sender=Hypervisor, hypervisor_id=hypervisor_id))
