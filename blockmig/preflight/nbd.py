"""An NBD export as a destination: the URL's shape, normalised as libvirt reads it back,
and the size the export serves."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from blockmig.errors import Refused
from blockmig.preflight.block import check_destination_size
from blockmig.preflight.files import control_character
from hosts.adapter import NBD_DEFAULT_PORT
from hosts.nbd import NbdUnreadable, nbd_export_size

NBD_EXAMPLE = "nbd://HOST:PORT/EXPORT, for example nbd://10.0.0.5:10809/vm1-vda"
NBD_SIZE_TIMEOUT = 10.0  # seconds qemu-img may take to read an export's size
MAX_URL_CHARS = 1024  # what MigrationDisk.destination holds (the NBD protocol allows longer names)
_NBD_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
_NBD_EXPORT = re.compile(r"^[A-Za-z0-9._~+=:@/-]+$")


@dataclass(frozen=True)
class NbdExport:
    host: str
    port: int
    export: str

    @property
    def url(self) -> str:
        """The form libvirt's XML reads back as (hosts.domxml), so it compares as stored."""
        return f"nbd://{self.host}:{self.port}/{self.export}"


def is_url(destination: str) -> bool:
    return "://" in destination or destination.lower().startswith("nbd:")


def parse_nbd_url(text: str) -> NbdExport:
    """An NBD export over TCP, or Refused saying what to change in the URL."""
    index = control_character(text)
    if index is not None:
        raise Refused(
            f"The URL has a control character (U+{ord(text[index]):04X}) at position {index + 1}: type it without one.",
            "destination",
        )
    if len(text) > MAX_URL_CHARS:
        raise Refused(f"An NBD URL may have at most {MAX_URL_CHARS} characters.", "destination")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise Refused(f"The port in “{text}” must be a number from 1 to 65535 ({NBD_EXAMPLE}).", "destination") from None
    if parts.scheme.lower() != "nbd":
        raise Refused(
            f"Only NBD exports over TCP can be network destinations ({NBD_EXAMPLE}); “{parts.scheme}://” is not one.",
            "destination",
        )
    if parts.username is not None or parts.password is not None:
        raise Refused("NBD has no user names or passwords: remove the “…@” before the host.", "destination")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise Refused("Remove the “?…” or “#…” part: options such as TLS are not supported for NBD destinations.", "destination")
    host = parts.hostname or ""
    if not host:
        raise Refused(f"Name the NBD server's host: {NBD_EXAMPLE}.", "destination")
    if ":" in host or not _NBD_HOST.match(host):
        raise Refused(
            f"“{host}” is not a host name or IPv4 address blockmig accepts for an NBD server (IPv6 literals are not "
            "supported yet).",
            "destination",
        )
    if port == 0:
        raise Refused(f"The port in “{text}” must be a number from 1 to 65535 ({NBD_EXAMPLE}).", "destination")
    port = port or NBD_DEFAULT_PORT
    export = parts.path[1:]
    if not export:
        raise Refused(
            f"Name the export after the port: nbd://{host}:{port}/EXPORT (the name qemu-nbd serves with -x).", "destination"
        )
    if not _NBD_EXPORT.match(export):
        raise Refused(
            f"The export name “{export}” has a character blockmig does not pass on (spaces, %, quotes …): use letters, "
            "digits and . _ - / : + = ~ @.",
            "destination",
        )
    return NbdExport(host.lower(), port, export)


def is_network_destination(destination: str) -> bool:
    """An NBD export (stored normalised by check_destination_shape)."""
    return destination.startswith("nbd://")


def check_nbd_destination(url: str, capacity: int, where: str) -> None:
    """The size an export serves, read from blockmig's own machine with qemu-img: an NBD
    export reports no identity, so its size is what can be checked (docs/engine.md)."""
    try:
        size = nbd_export_size(url, NBD_SIZE_TIMEOUT)
    except NbdUnreadable as problem:
        raise Refused(
            f"blockmig could not read the export {url} ({problem}): check that qemu-nbd serves it there "
            "(qemu-nbd --persistent -x EXPORT -p PORT …) and that this machine can reach that host and port.",
            "destination",
        ) from None
    check_destination_size(url, size, capacity, where)
