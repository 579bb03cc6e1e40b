"""Waits on a migration's row: until it reaches one of some states, and an abort through the
app until the migration (and its block job) is gone; what is odd goes to ANOMALIES."""

from __future__ import annotations

import time
from pathlib import Path

from harness.figures import ANOMALIES
from harness.lab import JobPoller


def wait_state(migration_id: int, states: set[str], timeout: float = 60.0, poll: float = 0.01):
    from blockmig.models import Migration

    deadline = time.monotonic() + timeout
    while True:
        row = Migration.objects.values("state", "failure_reason").get(pk=migration_id)
        if row["state"] in states:
            return row["state"]
        if time.monotonic() > deadline:
            raise RuntimeError(f"migration #{migration_id} is {row['state']} ({row['failure_reason']!r}), not {states}")
        time.sleep(poll)


def abort_and_wait(ctx, migration_id: int, poller: JobPoller | None = None, dest: Path | None = None) -> None:
    from blockmig.lifecycle import migration_abort
    from blockmig.models import Migration

    migration = Migration.objects.get(pk=migration_id)
    migration_abort(migration=migration, user=ctx["operator"])
    state = wait_state(migration_id, {"aborted", "failed"})
    if state != "aborted":
        # Not the bench's business to judge, but worth reporting: an abort should abort.
        reason = Migration.objects.get(pk=migration_id).failure_reason
        ANOMALIES.append(f"migration #{migration_id}: abort ended `{state}`: {reason} (audit: {audit_trail(migration_id)})")
    if poller:
        poller.wait_gone()
    if dest is not None and dest.exists():
        ANOMALIES.append(f"migration #{migration_id}: {dest} still there after the abort ended {state}")
        dest.unlink(missing_ok=True)


def audit_trail(migration_id: int) -> str:
    from blockmig.models import AuditEvent

    return ", ".join(f"{e.event_type}→{e.to_state}" for e in AuditEvent.objects.filter(migration_id=migration_id))
