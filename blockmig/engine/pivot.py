"""pivoting → completed: every mirror ready again and every destination unchanged, then the
pivot per disk, the saved definition defined again if the domain was undefined, and the
result verified (invariant 3, blockmig.verification decides)."""

from __future__ import annotations

import time

from blockmig.engine.base import Failed
from blockmig.engine.checks import HostChecks
from blockmig.models import Migration, MigrationDisk
from blockmig.states import State
from blockmig.verification import pivot_problems
from hosts.adapter import ConnectionLost, LibvirtFailure, retarget_definition


class Pivoting(HostChecks):
    def pivot(self, migration: Migration) -> None:
        uuid = migration.domain_uuid
        disks = list(migration.disks.all())
        problem = self.domain_problem(migration)
        if problem:
            raise Failed(problem)
        live = self.on_host.live_disks(uuid)
        todo = [d for d in disks if live[d.target].source != d.destination]
        deadline = time.monotonic() + 60
        for disk in todo:
            while True:
                job = self.on_host.job(uuid, disk.target)
                if job is None:
                    raise Failed(self.job_vanished(migration, disk))
                if job.ready:
                    break
                if time.monotonic() > deadline:
                    raise Failed(f"The mirror of {disk.target} did not become ready again within 60 s of the approval.")
                time.sleep(0.2)
        # Invariant 9: libvirt would pivot onto a file deleted meanwhile (QEMU holds it open).
        for disk in todo:
            self.check_destination_unchanged(disk)
        self.confirm_lease()
        # Every disk is ready before the first pivots, so they switch together.
        pivoted: list[str] = []
        for disk in todo:
            try:
                self.on_host.pivot(uuid, disk.target)
            except ConnectionLost:
                raise  # reconnect and look: the pivot happened or not, the live XML says which
            except LibvirtFailure as failure:
                done = f" ({', '.join(pivoted)} already pivoted)" if pivoted else ""
                raise Failed(f"libvirt refused to pivot {disk.target}{done}: {failure}") from None
            pivoted.append(disk.target)
        self.wait_jobs_gone(uuid, [d.target for d in disks])
        self.finish(self.load())

    def finish(self, migration: Migration) -> None:
        uuid = migration.domain_uuid
        disks = list(migration.disks.all())
        moves = {d.target: (d.destination, migration.dest_format, self.dest_kind(d)) for d in disks}
        if migration.definition_strategy == "undefine" and not self.on_host.is_persistent(uuid):
            self.confirm_lease()
            self.on_host.define(retarget_definition(migration.saved_definition, moves))
            self._note("definition_restored", {"points_to": {t: move[0] for t, move in moves.items()}}, domain_undefined=False)
        problems = self.verify(migration, disks)
        self._note("verified", {"ok": not problems, "problems": problems})
        if problems:
            raise Failed("Pivoted, but verification found: " + "; ".join(problems))
        self.transition(State.COMPLETED, expect={State.PIVOTING})
        self.refresh_inventory(migration)

    def verify(self, migration: Migration, disks: list[MigrationDisk]) -> list[str]:
        """Invariant 3: live source, persistent definition and chain are what was asked
        (blockmig.verification decides; this asks libvirt)."""
        uuid = migration.domain_uuid
        live = self.on_host.live_disks(uuid)
        persistent = self.on_host.is_persistent(uuid)
        inactive = self.on_host.inactive_disks(uuid) if persistent else {}
        return pivot_problems(migration.mode, disks, live, inactive, persistent, migration.definition_strategy)
