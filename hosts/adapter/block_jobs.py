"""Block jobs, what the migration engine runs: a connection that starts a copy, reads its
progress, changes its speed, cancels or pivots it, watches its BLOCK_JOB_2 events, and
undefines and redefines the domain around it (the old blockcopy procedure)."""

from __future__ import annotations

import libvirt

from hosts.adapter.capabilities import Capabilities
from hosts.adapter.definitions import disk_source_xml
from hosts.adapter.devices import BlockDevices
from hosts.adapter.domains import DomainReader
from hosts.adapter.errors import LibvirtFailure
from hosts.adapter.inventory import HostConnection
from hosts.adapter.opening import ensure_event_loop
from hosts.records import BlockJobInfo, DiskRecord

# BLOCK_JOB_2 statuses, by name, so callers never see libvirt's numbers.
JOB_EVENT_NAMES = {
    libvirt.VIR_DOMAIN_BLOCK_JOB_COMPLETED: "completed",
    libvirt.VIR_DOMAIN_BLOCK_JOB_FAILED: "failed",
    libvirt.VIR_DOMAIN_BLOCK_JOB_CANCELED: "canceled",
    libvirt.VIR_DOMAIN_BLOCK_JOB_READY: "ready",
}
JOB_TYPE_NAMES = {
    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_PULL: "pull",
    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COPY: "copy",
    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COMMIT: "commit",
    libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT: "active-commit",
}


class BlockJobHost(BlockDevices, Capabilities, DomainReader, HostConnection):
    """A connection that runs and watches block jobs. Opened with the event loop running
    so BLOCK_JOB_2 events reach `watch`. It reads domains, files, devices and the inventory
    too: the engine and preflight ask all of those on the connection that runs the copy."""

    def __enter__(self) -> BlockJobHost:
        ensure_event_loop()
        super().__enter__()  # DomainReader and Capabilities forget the last connection's handles there
        return self

    def __exit__(self, *exc) -> None:
        for callback_id in getattr(self, "_callbacks", []):
            try:
                # None after a failed open: the AttributeError is caught below.
                self.conn.domainEventDeregisterAny(callback_id)  # type: ignore[union-attr]
            except (libvirt.libvirtError, AttributeError):
                pass
        self._callbacks: list[int] = []
        super().__exit__(*exc)

    def job(self, uuid: str, target: str, disks: dict[str, DiskRecord] | None = None) -> BlockJobInfo | None:
        """The block job on a disk, whoever started it: libvirt's job info plus the live
        XML's <mirror> (which says whether a copy is ready)."""
        info = self._call(self.domain(uuid).blockJobInfo, target, 0)
        if not info:
            return None
        disks = disks if disks is not None else self.live_disks(uuid)
        mirror = disks[target].job if target in disks else None
        return BlockJobInfo(
            type=JOB_TYPE_NAMES.get(info.get("type"), "unknown"),
            cur=info.get("cur", 0),
            end=info.get("end", 0),
            bandwidth=info.get("bandwidth", 0),
            mirror_path=mirror.mirror_path if mirror else "",
            mirror_format=mirror.mirror_format if mirror else "",
            ready=bool(mirror and mirror.ready),
        )

    # -- acting -----------------------------------------------------------------------

    def block_copy(
        self,
        uuid: str,
        target: str,
        destination: str,
        *,
        dest_format: str,
        shallow: bool,
        reuse: bool,
        transient_job: bool,
        synchronous_writes: bool,
        bandwidth_bytes: int = 0,
        granularity: int | None = None,
        buf_size: int | None = None,
        kind: str = "file",
    ) -> None:
        flags = 0
        if shallow:
            flags |= libvirt.VIR_DOMAIN_BLOCK_COPY_SHALLOW
        if reuse:
            flags |= libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT
        if transient_job:
            flags |= libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB
        if synchronous_writes:
            flags |= libvirt.VIR_DOMAIN_BLOCK_COPY_SYNCHRONOUS_WRITES
        params: dict = {}
        if bandwidth_bytes:
            params[libvirt.VIR_DOMAIN_BLOCK_COPY_BANDWIDTH] = int(bandwidth_bytes)
        if granularity:
            params[libvirt.VIR_DOMAIN_BLOCK_COPY_GRANULARITY] = int(granularity)
        if buf_size:
            params[libvirt.VIR_DOMAIN_BLOCK_COPY_BUF_SIZE] = int(buf_size)
        self._call(self.domain(uuid).blockCopy, target, disk_source_xml(destination, dest_format, kind), params, flags)

    def set_speed(self, uuid: str, target: str, bandwidth_mib: int) -> None:
        self._call(self.domain(uuid).blockJobSetSpeed, target, int(bandwidth_mib), 0)

    def cancel_job(self, uuid: str, target: str) -> None:
        """Stop a copy without pivoting: the guest stays on its source."""
        self._call(self.domain(uuid).blockJobAbort, target, 0)

    def pivot(self, uuid: str, target: str) -> None:
        """Switch the guest to the copy; libvirt refuses unless the mirror is ready."""
        self._call(self.domain(uuid).blockJobAbort, target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)

    def undefine(self, uuid: str) -> None:
        """Make a running persistent domain transient (the old blockcopy procedure)."""
        dom = self.domain(uuid)
        try:
            self._call(dom.undefineFlags, libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
        except LibvirtFailure:
            self._call(dom.undefine)

    def define(self, domain_xml: str) -> None:
        self._call(self.open_conn.defineXML, domain_xml)

    def watch(self, uuid: str, on_event) -> None:
        """Call on_event(target, job_type, status) for every BLOCK_JOB_2 event of a domain,
        from libvirt's event thread. status is completed/failed/canceled/ready."""
        if not hasattr(self, "_callbacks"):
            self._callbacks = []

        def callback(_conn, _dom, disk, job_type, status, _opaque):
            on_event(disk, JOB_TYPE_NAMES.get(job_type, "unknown"), JOB_EVENT_NAMES.get(status, str(status)))

        callback_id = self._call(
            self.open_conn.domainEventRegisterAny, self.domain(uuid), libvirt.VIR_DOMAIN_EVENT_ID_BLOCK_JOB_2, callback, None
        )
        self._callbacks.append(callback_id)


def open_block_jobs(uri: str, timeout: float = 10.0) -> BlockJobHost:
    return BlockJobHost(uri, timeout)
