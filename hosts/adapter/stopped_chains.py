"""The backing chains of stopped domains, which libvirt's XML does not show: walked through
the host's storage pools (remote hosts) or the image files themselves (this machine)."""

from __future__ import annotations

import hashlib
import os
import posixpath
import xml.etree.ElementTree as ET
from dataclasses import replace

import libvirt

from hosts import domxml, inactive_chains
from hosts.adapter.connection import Connection, uri_is_local
from hosts.adapter.domains import STOPPED_STATES
from hosts.adapter.errors import LibvirtFailure
from hosts.records import DiskRecord


class StoppedChains(Connection):
    """What a connection can say about the chains of domains that are not running."""

    def _signature(self, values: domxml.DomainStats, state: str) -> str:
        """The stats signature; for a stopped domain on this machine also what its image
        files are now (one stat() per layer already read), so that a layer deleted, moved
        or rewritten while the domain is off gets its chain read again at the next sync."""
        signature = domxml.stats_signature(values)
        if state not in STOPPED_STATES or not uri_is_local(self.uri):
            return signature
        paths = [str(values.get(f"block.{i}.path", "")) for i in range(int(values.get("block.count", 0)))]
        files = inactive_chains.local_images.fingerprint(paths)
        return hashlib.sha1(f"{signature}|{files}".encode()).hexdigest()

    def stopped_chain(self, disk: DiskRecord) -> DiskRecord:
        """The disk with its true backing chain, for a domain that is not running.

        libvirt writes <backingStore> only into a running domain's XML, so a stopped
        domain's disk shows its active layer alone. Walk the chain instead: the storage
        pool's volume XML where a pool holds the path, else (local hosts only) the file
        itself through qemu-img. Where neither can tell, say the chain is unknown.
        """
        if disk.type not in ("file", "block") or disk.device not in ("disk", "lun") or not disk.source:
            return disk  # network disks, cdroms and empty drives: the XML says all there is
        local = uri_is_local(self.uri)
        if disk.format == "raw":
            # A raw image has no backing file; only whether it is there can change.
            if local and not os.path.lexists(disk.source):
                return self._with_walk(
                    disk, inactive_chains.walk(disk.source, "raw", disk.type, lambda _p: inactive_chains.Missing())
                )
            return disk
        if not local:
            return self._with_walk(disk, self.pool_chain(disk.source, disk.format, disk.type))
        lookup = inactive_chains.local_images.lookup_for_walk(self._volume_facts)
        return self._with_walk(disk, inactive_chains.walk(disk.source, disk.format, disk.type, lookup))

    def pool_chain(self, path: str, fmt: str, disk_type: str = "file") -> inactive_chains.WalkedChain:
        """The chain below `path` as the host's storage pools see it (all a remote host
        lets blockmig read). A pool's view is as fresh as its last refresh."""
        return inactive_chains.walk(path, fmt, disk_type, self._pool_lookup)

    @staticmethod
    def _with_walk(disk: DiskRecord, walked: inactive_chains.WalkedChain) -> DiskRecord:
        # Sizes the bulk stats gave the active layer win over the file's (they are libvirt's).
        stats_top = disk.chain[0] if disk.chain else None
        layers = list(walked.layers)
        if stats_top is not None and layers and layers[0].path == stats_top.path:
            layers[0] = replace(
                layers[0],
                capacity=layers[0].capacity if layers[0].capacity is not None else stats_top.capacity,
                allocation=layers[0].allocation if layers[0].allocation is not None else stats_top.allocation,
            )
        return replace(disk, chain=tuple(layers), chain_known=walked.known, chain_note=walked.note)

    def _pool_targets(self) -> tuple[str, ...]:
        """Target directories of the host's active storage pools, asked once per connection."""
        cached = getattr(self, "_pool_targets_seen", None)
        if cached is not None:
            return cached
        targets = []
        try:
            pools = self._call(self.open_conn.listAllStoragePools, libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        except LibvirtFailure:
            pools = []  # a driver without storage pools
        for pool in pools:
            try:
                target = ET.fromstring(self._call(pool.XMLDesc, 0)).findtext("./target/path", "")
            except (LibvirtFailure, ET.ParseError):
                continue
            if target:
                targets.append(posixpath.normpath(target))
        self._pool_targets_seen = tuple(targets)
        return self._pool_targets_seen

    def _in_a_pool(self, path: str) -> bool:
        return any(path.startswith(target.rstrip("/") + "/") for target in self._pool_targets())

    def _volume_facts(self, path: str) -> inactive_chains.ImageFacts | None:
        """The storage volume's own account of an image (and its backing file), or None
        when no pool holds the path. Only paths under a pool's directory are asked about,
        so a host without pools costs one call per connection, not one per layer."""
        if not self._in_a_pool(path):
            return None
        try:
            volume = self._call(self.open_conn.storageVolLookupByPath, path)
            return inactive_chains.parse_volume_xml(self._call(volume.XMLDesc, 0))
        except (LibvirtFailure, ET.ParseError):
            return None

    def _pool_lookup(self, path: str) -> inactive_chains.ImageFacts | inactive_chains.Missing | inactive_chains.Unknown:
        facts = self._volume_facts(path)
        if facts is not None:
            return facts
        if posixpath.dirname(path) in self._pool_targets():
            # The layer above names it, its directory is a pool, and the pool has no such
            # volume: deleted or moved (as of the pool's last refresh).
            return inactive_chains.Missing()
        return inactive_chains.Unknown(
            f"no storage pool on {self.uri} holds this file, and blockmig reads files itself only on this "
            "machine (define a storage pool on its directory, or start the domain, for the chain to show)."
        )
