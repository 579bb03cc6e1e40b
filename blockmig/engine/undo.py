"""aborting → aborted, and every failure: cancel blockmig's jobs, remove the destinations it
created that nothing uses (invariant 10), put the persistent definition back; the guest stays
on its source."""

from __future__ import annotations

import logging

from django.db import Error as DatabaseError  # any database failure, InterfaceError included

from blockmig.engine.base import Failed, StopDriving
from blockmig.engine.checks import ALIVE_STATES, HostChecks
from blockmig.leases import LeaseLost
from blockmig.lifecycle import StateMoved
from blockmig.models import Migration
from blockmig.states import TERMINAL_STATES, State
from hosts.adapter import ConnectFailure, DomainGone, retarget_definition

log = logging.getLogger(__name__)


class Undoing(HostChecks):
    def abort(self, migration: Migration) -> None:
        details = self.undo(migration)
        problems = []
        if self.domain_problem(migration) is None:
            live = self.on_host.live_disks(migration.domain_uuid)
            for disk in migration.disks.all():
                if disk.target in live and live[disk.target].source != disk.source_path:
                    problems.append(f"{disk.target} runs on {live[disk.target].source}, not {disk.source_path}")
        if problems:
            raise Failed("Abort left the domain changed: " + "; ".join(problems))
        self.transition(State.ABORTED, expect={State.ABORTING}, details=details)

    def undo(self, migration: Migration) -> dict:
        """Cancel our jobs on disks that have not pivoted, remove destinations we created
        that nothing uses, and put the persistent definition back. Returns what it did, for
        the audit. Idempotent: after an outage it is simply run again."""
        uuid = migration.domain_uuid
        disks = list(migration.disks.all())
        try:
            running = self.on_host.domain_state(uuid) in ALIVE_STATES
            exists = True
        except DomainGone:
            running = exists = False
        live = self.on_host.live_disks(uuid) if running else None
        pivoted = {d.target for d in disks if live and d.target in live and live[d.target].source == d.destination}
        cancelled, removed, kept = [], [], []
        if running:
            for disk in disks:
                if disk.target in pivoted:
                    continue
                job = self.on_host.job(uuid, disk.target, live)
                if job is not None and job.mirror_path in ("", disk.destination):
                    self.confirm_lease()
                    self.on_host.cancel_job(uuid, disk.target)
                    cancelled.append(disk.target)
            self.wait_jobs_gone(uuid, cancelled)
        for disk in disks:
            if not disk.created_destination or disk.target in pivoted or not self.on_host.path_exists(disk.destination):
                continue
            if disk.dest_identity and self.identity(disk.destination) != disk.dest_identity:
                kept.append(f"{disk.destination} (not the file blockmig created: another file now has its name)")
                continue
            # Invariant 10: only once libvirt, connected now, says nothing uses the file.
            users = self.on_host.users_of(disk.destination)
            if users:
                kept.append(f"{disk.destination} (used by {', '.join(users)})")
                continue
            self.confirm_lease()
            self.on_host.remove_file(disk.destination)
            removed.append(disk.destination)
        restored = self.restore_definition(migration, exists, pivoted)
        details = {"cancelled": cancelled, "removed": removed, "definition_restored": restored}
        if kept:
            details["kept"] = kept
        return details

    def restore_definition(self, migration: Migration, exists: bool, pivoted: set[str]) -> bool:
        if migration.definition_strategy != "undefine" or not migration.saved_definition:
            return False
        if exists and self.on_host.is_persistent(migration.domain_uuid):
            return False
        moves = {
            d.target: (d.destination, migration.dest_format, self.dest_kind(d))
            for d in migration.disks.all()
            if d.target in pivoted
        }
        self.confirm_lease()
        self.on_host.define(retarget_definition(migration.saved_definition, moves))
        self._note("definition_restored", {"points_to_destination": sorted(moves)}, domain_undefined=False)
        return True

    def _fail(self, migration: Migration, reason: str) -> None:
        """Undo what we started, then record the failure. An outage or a lost lease in the
        middle propagates: the undo is retried after it (self.failing keeps the reason)."""
        self.failing = reason
        if migration.state in TERMINAL_STATES:
            return
        details = {}
        if migration.state not in (State.REQUESTED, State.PREFLIGHT, State.QUEUED) and self.host is not None:
            try:
                details = self.undo(migration)
            except (ConnectFailure, DatabaseError, LeaseLost, StopDriving):
                raise
            except Exception as error:
                log.exception("migration %s: cleanup after failure", self.id)
                reason += f" Cleanup was incomplete ({error}); check the domain's definition and the destination."
        try:
            self.transition(State.FAILED, details={"reason": reason, **details}, failure_reason=reason)
        except StateMoved:
            pass
