"""How a hypervisor's errors leave the adapter: ConnectFailure (could not reach or log in),
ConnectionLost (an open connection dropped), LibvirtFailure (the host answered no) and
DomainGone, each with a message an operator can act on."""

from __future__ import annotations

import libvirt

# libvirt prints every error to stderr by default; we report them ourselves. Every module
# of the adapter imports this one, so the handler is in place before any call.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


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


def classify_open_error(uri: str, error: libvirt.libvirtError) -> ConnectFailure:
    """Why libvirt.open(uri) failed, as the ConnectFailure an operator can act on."""
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
