"""requested / preflight / queued → copying: the host checked again, the definition strategy
chosen and the inactive XML saved (invariant 2) in the write that takes a copy slot, then a
blockCopy per disk under a confirmed lease."""

from __future__ import annotations

from django.conf import settings

from blockmig.engine.base import Failed, Queued
from blockmig.engine.checks import HostChecks
from blockmig.errors import Refused
from blockmig.lifecycle import migration_start_or_queue
from blockmig.limits.rules import Wait, bandwidth_for
from blockmig.models import Migration, MigrationDisk
from blockmig.preflight.host import check_on_host
from blockmig.preflight.records import DiskRequest
from blockmig.states import State


class Starting(HostChecks):
    def start(self, migration: Migration) -> None:
        if migration.state == State.REQUESTED:
            migration = self.transition(State.PREFLIGHT, expect={State.REQUESTED})
        disks = list(migration.disks.all())
        try:
            plan = check_on_host(
                self.on_host,
                hypervisor=migration.hypervisor,
                domain_uuid=migration.domain_uuid,
                disks=[DiskRequest(d.target, d.destination) for d in disks],
                reuse_destination=migration.reuse_destination,
                synchronous_writes=migration.synchronous_writes,
                allowed_roots=migration.hypervisor.allowed_roots,
                migration_id=migration.pk,
                mode=migration.mode,
                dest_format=migration.dest_format,
            )
        except Refused as refused:
            raise Failed(f"Preflight before the copy refused: {refused.message}") from None
        if not plan.persistent:
            strategy = "none"
        elif migration.force_undefine or settings.BLOCKMIG_FORCE_UNDEFINE or not plan.transient_job:
            strategy = "undefine"
        else:
            strategy = "transient_job"
        saved = self.on_host.inactive_xml(migration.domain_uuid) if plan.persistent else ""
        # Invariant 2: the inactive XML is committed before anything on the host changes,
        # in the transaction that takes the copy slot (or queues the migration).
        admitted = migration_start_or_queue(
            self.id,
            lease=self.lease,
            details={"definition_strategy": strategy, "definition_saved": bool(saved)},
            saved_definition=saved,
            definition_strategy=strategy,
        )
        if isinstance(admitted, Wait):
            raise Queued(admitted.reason)
        migration = admitted
        if strategy == "undefine":
            self.confirm_lease()
            self.on_host.undefine(migration.domain_uuid)
            self._note("undefined", {"reason": "undefine/copy/redefine procedure"}, domain_undefined=True)
        self.start_copies(migration, disks)
        # Open disk and domain pages draw the mirror target now, not at the next periodic sync.
        self.refresh_inventory(migration, started_copy=True)

    def start_copies(self, migration: Migration, disks: list[MigrationDisk]) -> None:
        created = not migration.reuse_destination

        def record_created() -> None:
            # Before the calls: a crash after libvirt made the files must still remove them.
            MigrationDisk.objects.filter(pk__in=[d.pk for d in disks]).update(created_destination=created)

        self.confirm_lease(also=record_created)
        speeds = bandwidth_for(migration, list(migration.disks.all()))
        for disk in disks:
            disk.created_destination = created
            if self.lease.left() < self.spare:  # several disks: the first copies took a while
                self.confirm_lease()
            self.start_copy(migration, disk, speeds.get(disk.target, migration.bandwidth_mib))
        self.applied_bandwidth = {**(self.applied_bandwidth or {}), **{d.target: speeds[d.target] for d in disks}}
        self.applied_own = migration.bandwidth_mib

    def start_copy(self, migration: Migration, disk: MigrationDisk, speed_mib: int) -> None:
        """One blockCopy; the caller (start_copies) has confirmed the lease."""
        self.on_host.block_copy(
            migration.domain_uuid,
            disk.target,
            disk.destination,
            dest_format=migration.dest_format,
            shallow=migration.mode == Migration.Mode.SHALLOW,
            reuse=migration.reuse_destination,
            transient_job=migration.definition_strategy == "transient_job",
            synchronous_writes=migration.synchronous_writes,
            bandwidth_bytes=speed_mib * 2**20,
            granularity=migration.granularity,
            buf_size=migration.buf_size,
            kind=self.dest_kind(disk),
        )
        self.disk_update(disk, job_started=True, dest_identity=self.identity(disk.destination, self.dest_kind(disk)))
