"""The one module that imports libvirt.

Everything that talks to a hypervisor goes through HostConnection, which answers with the
plain records in hosts.records. Errors leave as ConnectFailure (could not reach or log in)
or LibvirtFailure (the host answered no), each with a message an operator can act on.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import stat
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import replace
from urllib.parse import urlsplit

import libvirt

from hosts import domxml, inactive_chains
from hosts.records import (
    BlockDevice,
    BlockJobInfo,
    BlockPool,
    DiskRecord,
    DomainRecord,
    HostFacts,
    Inventory,
    StorageVolume,
    version_string,
)
from hosts.uris import uri_problem

# libvirt prints every error to stderr by default; we report them ourselves.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

DOMAIN_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}

# States in which libvirt's XML carries no backing chain (no QEMU process to ask).
STOPPED_STATES = frozenset({"shutoff", "crashed"})

# Flag availability by libvirt version (docs: virDomainBlockCopyFlags).
TRANSIENT_JOB_SINCE = 4_005_000
SYNCHRONOUS_WRITES_SINCE = 8_000_000
QEMU_WRITE_BLOCKING_SINCE = 3_000_000


class ConnectFailure(Exception):
    """The host could not be reached or refused us. kind: bad_uri, unreachable, auth, timeout."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


class ConnectionLost(ConnectFailure):
    """An open connection dropped (libvirtd restarted, network blip). What runs inside QEMU
    goes on; reconnect and look again rather than conclude anything."""

    def __init__(self, message: str):
        super().__init__("lost", message)


class LibvirtFailure(Exception):
    """The host answered, but refused the operation."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


class DomainGone(LibvirtFailure):
    """libvirt, connected, says there is no such domain (destroyed and undefined)."""


# Codes and texts libvirt gives a call on a connection that has just dropped.
LOST_CONNECTION_TEXTS = (
    "client socket is closed",
    "end of file while reading data",
    "cannot recv data",
    "cannot write data",
    "broken pipe",
    "connection reset",
    "no connection",
)


AUTH_ERRORS = {libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_CANCELLED, libvirt.VIR_ERR_AUTH_UNAVAILABLE}
BAD_URI_ERRORS = {libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_NO_CONNECT}


def _classify(uri: str, error: libvirt.libvirtError) -> ConnectFailure:
    if uri.startswith("test:"):
        # libvirt's error for a file that is not node XML quotes the file's lines: never show it.
        return ConnectFailure(
            "bad_uri",
            f"libvirt's test driver could not load {uri}: the file must be a node XML file (hosts.testnode writes them).",
        )
    code = error.get_error_code()
    text = (error.get_error_message() or str(error)).strip()
    if code in AUTH_ERRORS or "authentication" in text.lower() or "permission denied" in text.lower():
        return ConnectFailure(
            "auth",
            f"{uri} refused to let blockmig log in ({text}). Check the user name, SSH key, "
            "SASL credentials or TLS certificates blockmig uses for this host.",
        )
    if code == libvirt.VIR_ERR_NO_CONNECT and "no connection driver" in text.lower():
        return ConnectFailure("bad_uri", f"libvirt has no driver for {uri}: {text}. Check the URI's scheme and path.")
    if code in BAD_URI_ERRORS and "uri" in text.lower():
        return ConnectFailure("bad_uri", f"{uri} is not a URI libvirt accepts: {text}.")
    return ConnectFailure(
        "unreachable",
        f"Cannot reach {uri} ({text}). Check that the host name and port are right, the host is up, "
        "and libvirtd runs there and listens for this kind of connection.",
    )


# Seconds between keepalive probes and how many may go unanswered before libvirt closes
# the connection: a host that vanishes while connected (cable, power, a firewall that
# starts dropping) is noticed after about interval x (count + 1) s instead of hanging calls.
KEEPALIVE = (5, 3)

# Opens that outlived their deadline and still hang inside libvirt (a host that accepted TCP
# and then said nothing). libvirt.open cannot be cancelled, so their threads are bounded
# instead: at most one per URI and MAX_HUNG_OPENS in all; past that, refuse at once.
MAX_HUNG_OPENS = 32
_hung_lock = threading.Lock()
_hung_opens: dict[str, float] = {}  # uri -> time.monotonic() when the hung attempt started


def hung_opens() -> dict[str, float]:
    """URIs whose abandoned connection attempt still hangs, with its age in seconds."""
    now = time.monotonic()
    with _hung_lock:
        return {uri: now - started for uri, started in _hung_opens.items()}


def _refuse_while_hung(uri: str) -> None:
    with _hung_lock:
        started = _hung_opens.get(uri)
        count = len(_hung_opens)
    if started is not None:
        raise ConnectFailure(
            "timeout",
            f"{uri} has not answered an earlier connection attempt, started {time.monotonic() - started:.0f} s ago; "
            "blockmig waits for that one instead of opening another. Check that the host is up and that "
            "no firewall silently drops the connection.",
        )
    if count >= MAX_HUNG_OPENS:
        raise ConnectFailure(
            "timeout",
            f"{count} connection attempts to other hosts still hang, so blockmig opens no more until they end: "
            "check the hosts whose syncs time out.",
        )


def _open(uri: str, timeout: float, keepalive: tuple[int, int] | None = KEEPALIVE) -> libvirt.virConnect:
    """Open `uri` within `timeout` seconds, the whole handshake included (TCP, TLS or SSH,
    authentication, the remote driver's open), with keepalive probes on the connection."""
    problem = uri_problem(uri)
    if problem:
        raise ConnectFailure("bad_uri", problem)
    _refuse_while_hung(uri)
    if keepalive:
        ensure_event_loop()  # keepalive probes are sent and answered from libvirt's event loop
    if uri.startswith("test:"):
        # The test driver runs inside this process (it reads a file): it cannot hang on a
        # network, so it needs no watchdog thread.
        try:
            return libvirt.open(uri)
        except libvirt.libvirtError as error:
            raise _classify(uri, error) from error
    outcome: dict = {}
    lock = threading.Lock()
    started = time.monotonic()

    def attempt() -> None:
        conn = error = None
        try:
            conn = libvirt.open(uri)
        except libvirt.libvirtError as failed:
            error = failed
        with lock:
            if outcome.get("abandoned"):
                if conn is not None:
                    conn.close()  # the caller gave up waiting; do not leak the late connection
                with _hung_lock:
                    _hung_opens.pop(uri, None)
            elif conn is not None:
                outcome["conn"] = conn
            else:
                outcome["error"] = error

    # libvirt.open has no timeout of its own; a host that accepts TCP and then says
    # nothing would hang the caller (a web request or the sync loop) forever.
    thread = threading.Thread(target=attempt, daemon=True, name=f"libvirt-open {uri}")
    thread.start()
    thread.join(timeout)
    with lock:
        if "conn" not in outcome and "error" not in outcome:
            outcome["abandoned"] = True
            with _hung_lock:
                _hung_opens[uri] = started
            raise ConnectFailure(
                "timeout",
                f"{uri} did not answer within {timeout:g} s. Check that the host is up, that no firewall "
                "silently drops the connection, and that the port belongs to a libvirtd that is not hung.",
            )
    if "error" in outcome:
        raise _classify(uri, outcome["error"])
    conn = outcome["conn"]
    if keepalive and not uri.startswith("test:"):  # the test driver runs in this process: nothing to probe
        try:
            conn.setKeepAlive(*keepalive)
        except libvirt.libvirtError:
            pass  # a local driver without an RPC connection has nothing to keep alive
    return conn


class HostConnection:
    """An open connection to one hypervisor. Use as a context manager.

    `calls` counts libvirt round trips so tests and benchmarks can show that a sync costs
    a bounded number of them.
    """

    def __init__(self, uri: str, timeout: float = 10.0, keepalive: tuple[int, int] | None = KEEPALIVE):
        self.uri = uri
        self.timeout = timeout
        self.keepalive = keepalive
        self.conn: libvirt.virConnect | None = None
        self.calls = 0

    @property
    def open_conn(self) -> libvirt.virConnect:
        """The connection, inside the with-block (outside it there is none)."""
        if self.conn is None:
            raise RuntimeError(f"{self.uri}: not connected (used outside `with HostConnection(...)`)")
        return self.conn

    def __enter__(self) -> HostConnection:
        self.conn = _open(self.uri, self.timeout, self.keepalive)
        self.calls += 1
        return self

    def __exit__(self, *exc) -> None:
        if self.conn is not None:
            try:
                self.open_conn.close()
            except libvirt.libvirtError:
                pass
            self.conn = None

    def _call(self, fn, *args):
        self.calls += 1
        try:
            return fn(*args)
        except libvirt.libvirtError as error:
            raise self._failure(error) from error

    def _failure(self, error: libvirt.libvirtError) -> Exception:
        """Tell "the host said no" from "the host is not there any more": a caller must not
        read a dropped connection as a refused or vanished job."""
        code = error.get_error_code()
        text = error.get_error_message() or str(error)
        if code == libvirt.VIR_ERR_NO_DOMAIN:
            return DomainGone(text, code)
        if not self.alive() or code == libvirt.VIR_ERR_RPC or any(t in text.lower() for t in LOST_CONNECTION_TEXTS):
            return ConnectionLost(f"the connection to {self.uri} dropped ({text})")
        return LibvirtFailure(text, code)

    def alive(self) -> bool:
        try:
            return self.conn is not None and self.open_conn.isAlive() == 1
        except libvirt.libvirtError:
            return False

    # -- inventory -------------------------------------------------------------------

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

    # -- chains of stopped domains -------------------------------------------------------

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


# =====================================================================================
# Block jobs (migration engine). Everything below is used by blockmig.engine/preflight.
# =====================================================================================

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

_event_loop_lock = threading.Lock()
_event_loop_started = False


def ensure_event_loop() -> None:
    """Register libvirt's default event implementation and run it in a daemon thread.

    Must happen before the connection that wants events is opened; idempotent per process.
    """
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, daemon=True, name="libvirt-events").start()
        _event_loop_started = True


def uri_is_local(uri: str) -> bool:
    """True when the hypervisor's files are this machine's files (no remote host in the URI)."""
    parts = urlsplit(uri)
    return parts.scheme == "qemu" and not parts.netloc


def _disk_paths(disk: DiskRecord) -> set[str]:
    return {disk.source, *(layer.path for layer in disk.chain), disk.job.mirror_path if disk.job else ""}


def _source_element(path: str, kind: str) -> ET.Element:
    """<source> of a disk on a file, a block device, or an NBD export given as
    nbd://host:port/export (blockmig.preflight checked and normalised it)."""
    if kind == "block":
        return ET.Element("source", dev=path)
    if kind == "network":
        url = urlsplit(path)
        source = ET.Element("source", protocol=url.scheme, name=url.path.lstrip("/"))
        ET.SubElement(source, "host", name=url.hostname or "", port=str(url.port or NBD_DEFAULT_PORT))
        return source
    return ET.Element("source", file=path)


# The port an nbd:// URL without one means (IANA's port for NBD).
NBD_DEFAULT_PORT = 10809


# Storage pool types whose volumes are block devices, in the order the form offers them.
BLOCK_POOL_TYPES = ("logical", "disk", "iscsi", "scsi", "mpath")


def _device_size(path: str) -> int | None:
    """A block device's size in bytes: the end of the device, as a seek finds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _device_busy(path: str) -> str:
    """Why the kernel holds a local block device, or "". An exclusive open fails with EBUSY
    while the device is mounted, swapped on, or part of an LVM, md or dm device; a QEMU
    that has it open does not hold it that way (users_of and the inventory see those)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
    except OSError as error:
        if error.errno == errno.EBUSY:
            return "the kernel holds it (mounted, swap, or part of an LVM, md or device-mapper device)"
        return ""
    os.close(fd)
    return ""


def disk_source_xml(path: str, fmt: str, kind: str = "file") -> str:
    """The <disk> a block copy writes to: type file, block (<source dev>) or network (NBD)."""
    disk = ET.Element("disk", type=kind, device="disk")
    ET.SubElement(disk, "driver", name="qemu", type=fmt)
    disk.append(_source_element(path, kind))
    return ET.tostring(disk, encoding="unicode")


def retarget_definition(domain_xml: str, moves: Mapping[str, tuple[str, ...]]) -> str:
    """The inactive XML with each moved disk (target → (path, format[, kind])) pointing at
    its copy; kind is file (the default), block or network."""
    root = ET.fromstring(domain_xml)
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if dev is None or dev not in moves:
            continue
        path, fmt, *rest = moves[dev]
        kind = rest[0] if rest else "file"
        disk.set("type", kind)
        for stale in disk.findall("backingStore") + disk.findall("source"):
            disk.remove(stale)
        driver = disk.find("driver")
        if driver is None:
            driver = ET.SubElement(disk, "driver", name="qemu")
        driver.set("type", fmt)
        disk.insert(list(disk).index(driver) + 1, _source_element(path, kind))
    return ET.tostring(root, encoding="unicode")


class BlockJobHost(HostConnection):
    """A connection that runs and watches block jobs. Opened with the event loop running
    so BLOCK_JOB_2 events reach `watch`."""

    def __enter__(self) -> BlockJobHost:
        ensure_event_loop()
        self._versions_seen: tuple[str, int, int] | None = None
        self._handles: dict[str, libvirt.virDomain] = {}
        super().__enter__()
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

    @property
    def is_local(self) -> bool:
        return uri_is_local(self.uri)

    # -- looking ----------------------------------------------------------------------

    def domain(self, uuid: str) -> libvirt.virDomain:
        """The domain's handle, looked up once per connection: a handle stays valid while
        the connection is open, and calls on it raise DomainGone once the domain is."""
        handle = self._handles.get(uuid)
        if handle is None:
            handle = self._handles[uuid] = self._call(self.open_conn.lookupByUUIDString, uuid)
        return handle

    def domain_state(self, uuid: str) -> str:
        state, _reason = self._call(self.domain(uuid).state)
        return DOMAIN_STATES.get(state, "nostate")

    def is_persistent(self, uuid: str) -> bool:
        return bool(self._call(self.domain(uuid).isPersistent))

    def live_xml(self, uuid: str) -> str:
        return self._call(self.domain(uuid).XMLDesc, 0)

    def inactive_xml(self, uuid: str) -> str:
        return self._call(self.domain(uuid).XMLDesc, libvirt.VIR_DOMAIN_XML_INACTIVE)

    def live_disks(self, uuid: str) -> dict[str, DiskRecord]:
        return {d.target: d for d in domxml.parse_disks(self.live_xml(uuid))}

    def inactive_disks(self, uuid: str) -> dict[str, DiskRecord]:
        return {d.target: d for d in domxml.parse_disks(self.inactive_xml(uuid))}

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

    def _versions(self) -> tuple[str, int, int]:
        """(driver, libvirt version, hypervisor version), asked once per connection: they
        cannot change while it is open, and a copy's start waits on every round trip."""
        seen = getattr(self, "_versions_seen", None)
        if seen is None:
            seen = self._versions_seen = (
                self._call(self.open_conn.getType),
                self._call(self.open_conn.getLibVersion),
                self._call(self.open_conn.getVersion),
            )
        return seen

    def supports_transient_job(self) -> bool:
        driver, lib_version, _hv = self._versions()
        return driver == "QEMU" and lib_version >= TRANSIENT_JOB_SINCE

    def supports_sync_writes(self) -> bool:
        driver, lib_version, hv_version = self._versions()
        return driver == "QEMU" and lib_version >= SYNCHRONOUS_WRITES_SINCE and hv_version >= QEMU_WRITE_BLOCKING_SINCE

    def path_exists(self, path: str) -> bool | None:
        """Whether a file exists on the host. Local hosts: the filesystem; remote hosts: a
        storage volume with that path; None when a remote host cannot tell."""
        if self.is_local:
            return os.path.lexists(path)
        try:
            self.open_conn.storageVolLookupByPath(path)
            return True
        except libvirt.libvirtError:
            return None

    def directory_exists(self, path: str) -> bool | None:
        """Whether a directory exists on the host; for remote hosts only when a storage pool
        targets it, else None (unknown)."""
        if self.is_local:
            return os.path.isdir(path)
        for pool in self._call(self.open_conn.listAllStoragePools, 0):
            try:
                target = ET.fromstring(pool.XMLDesc(0)).findtext("./target/path", "")
            except libvirt.libvirtError:
                continue
            if posixpath.normpath(target) == posixpath.normpath(path):
                return True
        return None

    def file_identity(self, path: str) -> str:
        """Which file `path` is now: "dev:inode" locally, the storage volume's key remotely,
        "" when the host cannot tell (no pool holds the path). Raises FileNotFoundError
        when a local path names nothing."""
        if self.is_local:
            st = os.stat(path)
            return f"{st.st_dev}:{st.st_ino}"
        try:
            return "volume:" + self.open_conn.storageVolLookupByPath(path).key()
        except libvirt.libvirtError:
            return ""

    def file_size(self, path: str) -> int | None:
        """Bytes on the host (local only; None where the host cannot tell)."""
        if not self.is_local:
            return None
        return os.stat(path).st_size

    def free_space(self, path: str) -> tuple[int, int] | None:
        """(free, total) bytes where `path` would be written: the local filesystem's statvfs,
        or on a remote host the libvirt storage pool whose target holds it (None when no
        pool does)."""
        if not self.is_local:
            return self._pool_space(path)
        try:
            st = os.statvfs(path if os.path.isdir(path) else os.path.dirname(path))
        except OSError:
            return None
        return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize

    # -- block devices and their pools (destinations beyond files) --------------------

    def disk_capacity(self, uuid: str, target: str) -> int:
        """The disk's virtual size in bytes (what the guest sees), from virDomainGetBlockInfo."""
        capacity, _allocation, _physical = self._call(self.domain(uuid).blockInfo, target, 0)
        return int(capacity)

    def block_device(self, path: str) -> BlockDevice | None:
        """The block device at `path` (links followed, as for /dev/<vg>/<lv> → ../dm-3), or
        None when the path names something else or nothing. Locally: its size, its device
        number as identity, and whether the kernel holds it (mounted, an LVM or md member);
        remotely: a storage volume of block type that a pool reports."""
        if self.is_local:
            try:
                st = os.stat(path)
            except OSError:
                return None
            if not stat.S_ISBLK(st.st_mode):
                return None
            return BlockDevice(
                path=path,
                size=_device_size(path),
                identity=f"rdev:{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}",
                busy=_device_busy(path),
            )
        try:
            volume = self.open_conn.storageVolLookupByPath(path)
            kind, capacity, _allocation = volume.info()
            key = volume.key()
        except libvirt.libvirtError:
            return None
        if kind != libvirt.VIR_STORAGE_VOL_BLOCK:
            return None
        return BlockDevice(path=path, size=int(capacity), identity=f"volume:{key}")

    def block_pools(self) -> list[BlockPool]:
        """Active storage pools whose volumes are block devices (volume groups first), each
        with its volumes, for the request form to offer. Pools that cannot be read are left out."""
        pools = []
        try:
            listed = self._call(self.open_conn.listAllStoragePools, libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
        except LibvirtFailure:
            return []  # a driver without storage pools
        for pool in listed:
            try:
                root = ET.fromstring(self._call(pool.XMLDesc, 0))
                kind = root.get("type", "")
                if kind not in BLOCK_POOL_TYPES:
                    continue
                self._call(pool.refresh, 0)  # volumes made outside libvirt (lvcreate) show up too
                volumes = []
                for volume in self._call(pool.listAllVolumes, 0):
                    _type, capacity, _allocation = self._call(volume.info)
                    volumes.append(StorageVolume(volume.name(), volume.path(), int(capacity), volume.key()))
                _state, capacity, _allocation, available = self._call(pool.info)
            except (LibvirtFailure, ET.ParseError):
                continue
            source = root.findtext("./source/name") or (root.find("./source/device") or ET.Element("d")).get("path") or ""
            pools.append(
                BlockPool(
                    name=pool.name(),
                    type=kind,
                    source=source,
                    target=root.findtext("./target/path", ""),
                    capacity=int(capacity),
                    available=int(available),
                    volumes=tuple(sorted(volumes, key=lambda v: v.path)),
                )
            )
        return sorted(pools, key=lambda p: (BLOCK_POOL_TYPES.index(p.type), p.name))

    def _pool_space(self, path: str) -> tuple[int, int] | None:
        wanted = posixpath.normpath(path)
        best: tuple[int, libvirt.virStoragePool] | None = None
        for pool in self._call(self.open_conn.listAllStoragePools, 0):
            try:
                target = posixpath.normpath(ET.fromstring(pool.XMLDesc(0)).findtext("./target/path", "") or "/nonexistent")
            except libvirt.libvirtError:
                continue
            if (wanted == target or wanted.startswith(target.rstrip("/") + "/")) and (best is None or len(target) > best[0]):
                best = (len(target), pool)
        if best is None:
            return None
        try:
            _state, capacity, _allocation, available = best[1].info()
        except libvirt.libvirtError:
            return None
        return int(available), int(capacity)

    def users_of(self, path: str) -> list[str]:
        """The domains whose live or persistent definition uses `path` as a source, a
        backing layer or a mirror target. Asked before a file is removed (invariant 10)."""
        users = []
        for dom in self._call(self.open_conn.listAllDomains, 0):
            try:
                if self._domain_uses(dom, path):
                    users.append(dom.name())
            except DomainGone:
                continue  # it went away while we looked: it uses nothing now
        return users

    def _domain_uses(self, dom: libvirt.virDomain, path: str) -> bool:
        flags = [libvirt.VIR_DOMAIN_XML_INACTIVE] if self._call(dom.isPersistent) else []
        if self._call(dom.isActive):
            flags.insert(0, 0)
        for flag in flags:
            xml = self._call(dom.XMLDesc, flag)
            if any(path in _disk_paths(disk) for disk in domxml.parse_disks(xml)):
                return True
        return False

    def remove_file(self, path: str) -> None:
        """Delete a destination blockmig created (local: unlink; remote: its storage volume).
        Never a device: blockmig only copies onto block devices someone else made."""
        if self.is_local:
            try:
                if stat.S_ISBLK(os.stat(path).st_mode):
                    raise LibvirtFailure(f"{path} is a block device: blockmig never removes one.")
                os.unlink(path)
            except FileNotFoundError:
                pass
            return
        try:
            self.open_conn.storageVolLookupByPath(path).delete(0)
        except libvirt.libvirtError as error:
            raise LibvirtFailure(f"Could not remove {path}: {error.get_error_message()}") from error

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
