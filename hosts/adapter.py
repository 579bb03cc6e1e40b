"""The one module that imports libvirt.

Everything that talks to a hypervisor goes through HostConnection, which answers with the
plain records in hosts.records. Errors leave as ConnectFailure (could not reach or log in)
or LibvirtFailure (the host answered no), each with a message an operator can act on.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import libvirt

from hosts import domxml
from hosts.records import DomainRecord, HostFacts, Inventory, version_string
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


class LibvirtFailure(Exception):
    """The host answered, but refused the operation."""


AUTH_ERRORS = {libvirt.VIR_ERR_AUTH_FAILED, libvirt.VIR_ERR_AUTH_CANCELLED, libvirt.VIR_ERR_AUTH_UNAVAILABLE}
BAD_URI_ERRORS = {libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_NO_CONNECT}


def _classify(uri: str, error: libvirt.libvirtError) -> ConnectFailure:
    code = error.get_error_code()
    text = (error.get_error_message() or str(error)).strip()
    if code in AUTH_ERRORS or "authentication" in text.lower() or "permission denied" in text.lower():
        return ConnectFailure("auth", f"{uri} refused our credentials: {text}. Check the user, keys or certificates for this host.")
    if code == libvirt.VIR_ERR_NO_CONNECT and "no connection driver" in text.lower():
        return ConnectFailure("bad_uri", f"libvirt has no driver for {uri}: {text}. Check the URI's scheme and path.")
    if code in BAD_URI_ERRORS and "uri" in text.lower():
        return ConnectFailure("bad_uri", f"{uri} is not a URI libvirt accepts: {text}.")
    return ConnectFailure("unreachable", f"Cannot reach {uri}: {text}. Check that the host is up and libvirtd listens there.")


def _open(uri: str, timeout: float) -> libvirt.virConnect:
    problem = uri_problem(uri)
    if problem:
        raise ConnectFailure("bad_uri", problem)
    outcome: dict = {}

    def attempt() -> None:
        try:
            outcome["conn"] = libvirt.open(uri)
        except libvirt.libvirtError as error:
            outcome["error"] = error

    # libvirt.open has no timeout of its own; a host that accepts TCP and then says
    # nothing would hang the caller (a web request or the sync loop) forever.
    thread = threading.Thread(target=attempt, daemon=True, name=f"libvirt-open {uri}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ConnectFailure("timeout", f"{uri} did not answer within {timeout:g} s. Check the host and any firewall between us.")
    if "error" in outcome:
        raise _classify(uri, outcome["error"])
    return outcome["conn"]


class HostConnection:
    """An open connection to one hypervisor. Use as a context manager.

    `calls` counts libvirt round trips so tests and benchmarks can show that a sync costs
    a bounded number of them.
    """

    def __init__(self, uri: str, timeout: float = 10.0):
        self.uri = uri
        self.timeout = timeout
        self.conn: libvirt.virConnect | None = None
        self.calls = 0

    def __enter__(self) -> HostConnection:
        self.conn = _open(self.uri, self.timeout)
        self.calls += 1
        return self

    def __exit__(self, *exc) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except libvirt.libvirtError:
                pass
            self.conn = None

    def _call(self, fn, *args):
        self.calls += 1
        try:
            return fn(*args)
        except libvirt.libvirtError as error:
            raise LibvirtFailure(error.get_error_message() or str(error)) from error

    # -- inventory -------------------------------------------------------------------

    def facts(self) -> HostFacts:
        conn = self.conn
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
            self._call(self.conn.getDomainCapabilities, None, None, None, "kvm")
            return True
        except LibvirtFailure:
            return False

    def inventory(self, known: dict[str, str] | None = None, force: bool = False) -> Inventory:
        """All domains with disks and chains, in a bounded number of bulk calls.

        `known` maps uuid → stats signature from the previous sync; a domain whose
        signature is unchanged keeps its stored disks (DomainRecord.disks is None-like
        empty and `unchanged` lists it), so only new or changed domains cost an XML read.
        `force` reads every domain's XML.
        """
        conn = self.conn
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
        unchanged: list[str] = []
        for dom in domains:
            uuid = dom.UUIDString()
            values = stats.get(uuid, {})
            signature = domxml.stats_signature(values)
            state = DOMAIN_STATES.get(values.get("state.state"), "nostate")
            if not force and known.get(uuid) == signature:
                unchanged.append(uuid)
                disks = None
            else:
                xml = self._domain_xml(dom)
                disks = domxml.merge_block_stats(domxml.parse_disks(xml), values) if xml else ()
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

    def _domain_xml(self, dom: libvirt.virDomain) -> str:
        try:
            return self._call(dom.XMLDesc, 0)
        except LibvirtFailure:
            return ""  # the domain went away between the list and this read

    def domain_names(self) -> Iterable[str]:
        return [d.name() for d in self._call(self.conn.listAllDomains, 0)]


def open_host(uri: str, timeout: float = 10.0) -> HostConnection:
    return HostConnection(uri, timeout)
