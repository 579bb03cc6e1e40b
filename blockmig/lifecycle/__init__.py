"""Every write to a migration goes through these functions.

Each commits the new state and its audit event in one transaction, then publishes the
change to the channel layer on commit (blockmig.live.publish), so a browser never sees a state
the database does not have.

CONTRACT (implemented by the engine; the UI codes against these names):

    @dataclass(frozen=True)
    class DiskRequest: target: str; destination: str

    migration_request(*, user, hypervisor, domain_uuid: str, disks: list[DiskRequest],
                      mode="shallow", dest_format="qcow2", reuse_destination=False,
                      bandwidth_mib=0, synchronous_writes=False,
                      granularity=None, buf_size=None) -> Migration
        runs preflight synchronously (clear Refused on any problem, nothing changed),
        creates the row + audit "requested", wakes the workers, returns at once.
    migration_approve(*, migration, user) -> Migration      # approver, not the requester
    migration_abort(*, migration, user) -> Migration        # operator/approver, before pivot
    migration_set_bandwidth(*, migration, user, bandwidth_mib: int) -> Migration
    hypervisor_set_auto_pivot(*, hypervisor, user, enabled: bool) -> None   # admin
All raise blockmig.errors.Refused with a message that names what to fix.

The engine moves a migration through the same machine with migration_transition().

This package is that one door; callers import from it. Which module holds what:
`transitions` (the state machine's moves, the copy limits' admission, the engine's progress
and notes), `requests` (a new migration), `decisions` (approve, abort, bandwidth: people's
actions on a migration under way), `host_policy` (a host's auto-pivot policy). The modules
import each other, never this package.
"""

from blockmig.lifecycle.decisions import migration_abort, migration_approve, migration_set_bandwidth
from blockmig.lifecycle.host_policy import auto_pivot_policy_setter, hypervisor_set_auto_pivot
from blockmig.lifecycle.requests import migration_request, migration_request_invalid
from blockmig.lifecycle.transitions import (
    StateMoved,
    migration_note,
    migration_record_progress,
    migration_start_or_queue,
    migration_transition,
)
from blockmig.preflight.records import DiskRequest

__all__ = [
    "DiskRequest",
    "StateMoved",
    "auto_pivot_policy_setter",
    "hypervisor_set_auto_pivot",
    "migration_abort",
    "migration_approve",
    "migration_note",
    "migration_record_progress",
    "migration_request",
    "migration_request_invalid",
    "migration_set_bandwidth",
    "migration_start_or_queue",
    "migration_transition",
]
