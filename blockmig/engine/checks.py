"""What the host says about a migration's domain, jobs and destinations, and what it means.

Used by every step: why the domain can no longer carry the copy, why a block job ended
without blockmig asking, which kind of destination a disk has and whether it is still the
file or device the copy began with (invariant 9).
"""

from __future__ import annotations

import time

from blockmig.engine.base import DriverBase, Failed
from blockmig.models import Migration, MigrationDisk
from blockmig.preflight.kinds import destination_medium
from hosts.adapter import DomainGone, LibvirtFailure

JOB_GONE_TIMEOUT = 60.0
ALIVE_STATES = {"running", "paused", "blocked"}
PASSING_STATES = {"shutdown", "nostate"}  # on the way to shut off (or to gone)
SETTLE_LOOKS = 5
NEARLY_FULL = 4 * 2**20  # bytes free under which a failed copy is put down to ENOSPC


class HostChecks(DriverBase):
    def explain(self, migration: Migration, failure: LibvirtFailure) -> str:
        """A libvirt refusal, in terms of what happened to the domain when that is the cause."""
        try:
            gone = self.domain_problem(migration)
        except LibvirtFailure:
            gone = None  # the refusal itself is the best explanation there is
        return gone or f"libvirt refused: {failure}"

    def domain_problem(self, migration: Migration) -> str | None:
        """Why the domain can no longer carry the copy, or None while it runs."""
        try:
            state = self.on_host.domain_state(migration.domain_uuid)
            for _ in range(SETTLE_LOOKS):
                if state not in PASSING_STATES:
                    break
                # libvirt shows "shutdown" while it tears a domain down: look again, so a
                # domain that is being destroyed and undefined is reported as gone.
                time.sleep(0.3)
                state = self.on_host.domain_state(migration.domain_uuid)
        except DomainGone:
            if migration.definition_strategy == "undefine" and migration.saved_definition:
                after = "blockmig defines it again, shut off, from the definition it saved"
            elif migration.saved_definition:
                after = "its saved definition is kept in this migration for an admin to restore"
            else:
                after = "it was transient, so there is no definition to restore"
            return f"The domain {migration.domain_name} no longer exists (destroyed and undefined outside blockmig); {after}."
        if state not in ALIVE_STATES:
            return f"The domain {migration.domain_name} is no longer running (it is {state}); the copy cannot go on."
        return None

    def dest_kind(self, disk: MigrationDisk) -> str:
        """file, block or network, told apart as preflight does (an nbd:// URL, a path the
        host reports as a block device, else a file). Asked once per driver: a device that
        vanishes later still counts as one, so the check before the pivot refuses it."""
        if disk.target not in self.dest_kinds:
            self.dest_kinds[disk.target] = destination_medium(self.on_host, disk.destination)
        return self.dest_kinds[disk.target]

    def identity(self, path: str, kind: str = "file") -> str:
        """Which file or device `path` is now ("" where the host cannot tell). An NBD export
        has no identity a client can ask for: the page says so before the approval."""
        if kind == "network":
            return ""
        if kind == "block":
            device = self.on_host.block_device(path)
            return device.identity if device is not None else ""
        try:
            return self.on_host.file_identity(path)
        except FileNotFoundError:
            return ""

    def job_vanished(self, migration: Migration, disk: MigrationDisk) -> str:
        """Why a disk's copy ended without blockmig asking, as precisely as libvirt lets us say."""
        with self.lock:
            bad = self.bad_events.get(disk.target)
        if bad == "canceled":
            return (
                f"The block copy of {disk.target} was cancelled outside blockmig (for example with "
                f"`virsh blockjob {migration.domain_name} {disk.target} --abort`); the guest stays on {disk.source_path}."
            )
        space = self.on_host.free_space(disk.destination) if self.dest_kind(disk) == "file" else None
        if space is not None and space[0] < NEARLY_FULL:
            free, total = space
            return (
                f"QEMU could not write the copy of {disk.target} to {disk.destination}: No space left on device "
                f"({free // 2**20} MiB free of {total // 2**20} MiB on its filesystem). Free space there or choose "
                f"another destination; the guest stays on {disk.source_path}."
            )
        if bad == "failed":
            return (
                f"libvirt reports that the copy of {disk.target} to {disk.destination} failed: check that the "
                f"destination is writable and has room; the guest stays on {disk.source_path}."
            )
        return (
            f"The block copy of {disk.target} stopped without blockmig asking (cancelled outside blockmig, "
            f"or QEMU ended it); the guest stays on {disk.source_path}."
        )

    def check_destination_unchanged(self, disk: MigrationDisk) -> None:
        kind = self.dest_kind(disk)
        if kind == "network":
            return  # an NBD export has no identity to compare (the page said so before the approval)
        size: int | None
        if kind == "block":
            device = self.on_host.block_device(disk.destination)
            identity, size = (device.identity, None) if device is not None else (None, None)
        else:
            try:
                identity = self.on_host.file_identity(disk.destination)
                size = self.on_host.file_size(disk.destination)
            except FileNotFoundError:
                identity, size = None, None
        changed = None
        if identity is None:
            changed = "it is no longer a block device" if kind == "block" else "it no longer exists"
        elif disk.dest_identity and identity != disk.dest_identity:
            changed = "another device now has its name" if kind == "block" else "another file now has its name"
        elif disk.dest_size_at_ready is not None and size is not None and size < disk.dest_size_at_ready:
            changed = f"it shrank from {disk.dest_size_at_ready} to {size} bytes"
        if changed:
            raise Failed(
                f"The destination {disk.destination} was deleted or replaced after the copy began ({changed}): "
                f"the pivot was refused, the copy aborted and the guest stays on {disk.source_path}."
            )

    def wait_jobs_gone(self, uuid: str, targets: list[str]) -> None:
        deadline = time.monotonic() + JOB_GONE_TIMEOUT
        while any(self.on_host.job(uuid, t) is not None for t in targets):
            if time.monotonic() > deadline:
                raise Failed(f"The block jobs on {', '.join(targets)} did not end within {JOB_GONE_TIMEOUT:g} s.")
            time.sleep(0.1)
