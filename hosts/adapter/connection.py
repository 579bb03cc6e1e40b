"""One open connection to a hypervisor: opened and closed as a context manager, every call
counted and its libvirt error turned into the adapter's own (hosts.adapter.errors). The
classes that read and act on a host (inventory, domains, files, devices, block jobs) build
on it."""

from __future__ import annotations

from typing import Self
from urllib.parse import urlsplit

import libvirt

from hosts.adapter.errors import LOST_CONNECTION_TEXTS, ConnectionLost, DomainGone, LibvirtFailure
from hosts.adapter.opening import KEEPALIVE, open_connection


def uri_is_local(uri: str) -> bool:
    """True when the hypervisor's files are this machine's files (no remote host in the URI)."""
    parts = urlsplit(uri)
    return parts.scheme == "qemu" and not parts.netloc


class Connection:
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

    def __enter__(self) -> Self:
        self.conn = open_connection(self.uri, self.timeout, self.keepalive)
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
