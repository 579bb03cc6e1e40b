"""A host's inventory: its facts and all its domains with their disks and chains, read in
a bounded number of bulk calls (what hosts.sync stores)."""

from __future__ import annotations

from dataclasses import replace

import libvirt

from hosts import domxml
from hosts.adapter.capabilities import QEMU_WRITE_BLOCKING_SINCE, SYNCHRONOUS_WRITES_SINCE, TRANSIENT_JOB_SINCE
from hosts.adapter.domains import DOMAIN_STATES, STOPPED_STATES
from hosts.adapter.errors import LibvirtFailure
from hosts.adapter.stopped_chains import StoppedChains
from hosts.records import DiskRecord, DomainRecord, HostFacts, Inventory, version_string


class HostConnection(StoppedChains):
    """An open connection to one hypervisor that reads its inventory. Use as a context
    manager; `calls` counts its libvirt round trips (hosts.adapter.connection)."""

    def facts(self) -> HostFacts:
        conn = self.open_conn
        driver = self._call(conn.getType)
        lib_version = self._call(conn.getLibVersion)
        hv_version = self._call(conn.getVersion)
        hostname = self._call(conn.getHostname)
        if driver == "QEMU":
            virt_type = "kvm" if self._kvm_available() else "qemu"
            transient = lib_version >= TRANSIENT_JOB_SINCE
            sync_writes = lib_version >= SYNCHRONOUS_WRITES_SINCE and hv_version >= QEMU_WRITE_BLOCKING_SINCE
        else:
            virt_type, transient, sync_writes = driver.lower(), False, False
        return HostFacts(
            hostname=hostname,
            driver=driver,
            libvirt_version=version_string(lib_version),
            hypervisor_version=version_string(hv_version),
            virt_type=virt_type,
            supports_transient_job=transient,
            supports_sync_writes=sync_writes,
        )

    def _kvm_available(self) -> bool:
        try:
            self._call(self.open_conn.getDomainCapabilities, None, None, None, "kvm")
            return True
        except LibvirtFailure:
            return False

    def inventory(self, known: dict[str, str] | None = None, force: bool = False) -> Inventory:
        """All domains with disks and chains, in a bounded number of bulk calls.

        `known` maps uuid → stats signature from the previous sync; a domain whose
        signature is unchanged comes back with `disks=None` (keep what is stored), so only
        new or changed domains cost an XML read. `force` reads every domain's XML.
        Cost: 3 × listAllDomains + 1 × getAllDomainStats + the facts calls + one XMLDesc
        per re-read domain (no bulk call returns disk bus, format or mirror) + one
        blockJobInfo per mirror job found in those XMLs (for cur/end).
        """
        conn = self.open_conn
        known = known or {}
        before = self.calls
        domains = self._call(conn.listAllDomains, 0)
        persistent = {d.UUIDString() for d in self._call(conn.listAllDomains, libvirt.VIR_CONNECT_LIST_DOMAINS_PERSISTENT)}
        autostart = {d.UUIDString() for d in self._call(conn.listAllDomains, libvirt.VIR_CONNECT_LIST_DOMAINS_AUTOSTART)}
        stats = {
            dom.UUIDString(): values
            for dom, values in self._call(
                conn.getAllDomainStats,
                libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_BLOCK,
                libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_BACKING,
            )
        }
        inventory = Inventory(facts=self.facts())
        for dom in domains:
            uuid = dom.UUIDString()
            values = stats.get(uuid, {})
            state = DOMAIN_STATES.get(values.get("state.state"), "nostate")
            signature = self._signature(values, state)
            if not force and known.get(uuid) == signature:
                disks = None
            else:
                xml = self._domain_xml(dom)
                disks = domxml.merge_block_stats(domxml.parse_disks(xml), values) if xml else ()
                disks = self._with_job_progress(dom, disks)
                if state in STOPPED_STATES:
                    disks = tuple(self.stopped_chain(disk) for disk in disks)
                    signature = self._signature(values, state)  # the walk has filled the cache it reads
            inventory.domains.append(
                DomainRecord(
                    uuid=uuid,
                    name=dom.name(),
                    state=state,
                    persistent=uuid in persistent,
                    autostart=uuid in autostart,
                    disks=disks,
                )
            )
            inventory.signatures[uuid] = signature
        inventory.calls = self.calls - before
        return inventory

    def _with_job_progress(self, dom: libvirt.virDomain, disks: tuple[DiskRecord, ...]) -> tuple[DiskRecord, ...]:
        """Fill cur/end/bandwidth of the jobs the XML shows (<mirror>): one call per job, not per disk."""
        if not any(disk.job for disk in disks):
            return disks
        return tuple(self._job_progress(dom, disk) if disk.job else disk for disk in disks)

    def _job_progress(self, dom: libvirt.virDomain, disk: DiskRecord) -> DiskRecord:
        try:
            info = self._call(dom.blockJobInfo, disk.target, libvirt.VIR_DOMAIN_BLOCK_JOB_INFO_BANDWIDTH_BYTES)
        except LibvirtFailure:
            return disk  # the domain or the job ended after the XML read; keep what the XML said
        if not info or disk.job is None:
            return disk
        job = replace(disk.job, cur=info.get("cur", 0), end=info.get("end", 0), bandwidth=info.get("bandwidth", 0))
        return replace(disk, job=job)

    def _domain_xml(self, dom: libvirt.virDomain) -> str:
        try:
            return self._call(dom.XMLDesc, 0)
        except LibvirtFailure:
            return ""  # the domain went away between the list and this read
