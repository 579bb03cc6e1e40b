"""Which libvirt URIs blockmig accepts, checked before any connection is tried.

A libvirt URI is more than an address: its query can make the client run a program
(qemu+ssh's `command=`, `netcat=`, `proxy=`), read a local file (`keyfile=`, `pkipath=`,
any `test:///file`) or talk to any socket (`socket=`, qemu+unix). hosts.adapter.opening asks
`uri_problem` before every connection (form, Django admin, sync, refresh, engine), so a URI
stored by any route is refused here before libvirt sees it.

The parse is strict rather than forgiving: wherever libvirt (libxml2's URI parser and its own
query splitter) could read a URI differently from urllib, the URI is refused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from django.conf import settings

# scheme → what the query may carry (empty: nothing).
ALLOWED_PARAMETERS: dict[str, tuple[str, ...]] = {
    "qemu": (),
    "qemu+ssh": ("keyfile",),
    "qemu+tls": (),
    "qemu+tcp": (),
    "test": (),
}
URI_SCHEMES = tuple(ALLOWED_PARAMETERS)
REMOTE_SCHEMES = ("qemu+ssh", "qemu+tls", "qemu+tcp")

# Why a parameter libvirt understands is refused, for the message an admin reads.
PARAMETER_RISKS = {
    "command": "it names the program libvirt runs to connect",
    "netcat": "it names the program libvirt runs on the remote host",
    "proxy": "it chooses the program that relays the connection",
    "socket": "it points libvirt at any socket",
    "name": "it changes what the remote libvirtd opens",
    "mode": "it changes which daemon and program the connection uses",
    "no_tty": "it changes how the ssh program is run",
    "no_verify": "it turns off the host key or certificate check",
    "known_hosts": "it reads host keys from any file",
    "known_hosts_verify": "it turns off or changes the host key check",
    "sshauth": "it changes how the ssh client authenticates",
    "pkipath": "it reads certificates from any directory",
    "tls_priority": "it changes which TLS ciphers are accepted",
    "keyfile": "it reads a key from a file",
}

# Characters libvirt and urllib might read differently, or that have no place in a URI
# an admin types: whitespace, controls, quotes, backslash, fragment, non-ASCII.
_SAFE_URI = re.compile(r"[A-Za-z0-9\-._~:/?=&@%+\[\],]*")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?)*\.?")
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_AUTHORITY = re.compile(r"(?:(?P<user>[^@]*)@)?(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>[^:]*))?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class UnsafeURI(ValueError):
    """What is wrong with a URI, in words an admin can act on."""


@dataclass(frozen=True)
class LibvirtURI:
    scheme: str
    user: str
    host: str
    port: int | None
    path: str  # percent-decoded, as libvirt reads it
    parameters: list[tuple[str, str]] = field(default_factory=list)


def node_file_dir() -> Path | None:
    """The one directory whose node files test:/// URIs may name."""
    default = Path(settings.VAR_DIR) / "test-nodes" if getattr(settings, "VAR_DIR", None) else None
    value = getattr(settings, "BLOCKMIG_TEST_DRIVER_DIR", default)
    return Path(value) if value else None


def ssh_key_dir() -> Path | None:
    """The one directory whose files qemu+ssh's keyfile= may name (unset: no keyfile=)."""
    value = getattr(settings, "BLOCKMIG_SSH_KEY_DIR", None)
    return Path(value) if value else None


def uri_problem(uri: str) -> str | None:
    """Return what is wrong with a libvirt URI in words an admin can act on, or None."""
    try:
        parse_uri(uri)
    except UnsafeURI as problem:
        return str(problem)
    return None


def parse_uri(uri: str) -> LibvirtURI:
    """The URI's parts if blockmig may connect to it; UnsafeURI saying why not otherwise."""
    if not uri.strip():
        raise UnsafeURI("Enter a libvirt URI, for example qemu:///system.")
    if "://" not in uri:
        raise UnsafeURI(f"“{uri}” is not a libvirt URI: it needs a scheme, for example qemu:///system or qemu+ssh://host/system.")
    scheme = uri.split("://", 1)[0]
    if scheme not in URI_SCHEMES:
        raise UnsafeURI(f"Unsupported scheme “{scheme}”: use one of {', '.join(s + '://' for s in URI_SCHEMES)}.")
    if not _SAFE_URI.fullmatch(uri):
        bad = next(c for c in uri if not _SAFE_URI.fullmatch(c))
        raise UnsafeURI(f"The URI contains {_describe(bad)}, which a libvirt URI blockmig accepts may not contain.")
    try:
        parts = urlsplit(uri)
    except ValueError as error:  # e.g. an unbalanced "[" in the host
        raise UnsafeURI(f"“{uri}” is not a URI blockmig can read: {error}.") from None
    user, host, port = _authority(scheme, parts.netloc)
    path = _path(scheme, parts.path)
    parameters = _parameters(scheme, parts.query)
    return LibvirtURI(scheme, user, host, port, path, parameters)


def _describe(char: str) -> str:
    if char.isspace() or _CONTROL.match(char):
        return f"a space or control character (U+{ord(char):04X})"
    if char == "#":
        return "a fragment (“#”)"
    return f"“{char}”"


def _authority(scheme: str, netloc: str) -> tuple[str, str, int | None]:
    if scheme not in REMOTE_SCHEMES:
        if netloc:
            example = "qemu:///system" if scheme == "qemu" else "test:///default"
            raise UnsafeURI(
                f"A {scheme}:// URI names no host (“{netloc}”): write {example}, "
                "or use qemu+ssh://, qemu+tls:// or qemu+tcp:// for another machine."
            )
        return "", "", None
    if not netloc:
        raise UnsafeURI(f"A {scheme} URI needs a host name, for example {scheme}://kvm01.example.org/system.")
    match = _AUTHORITY.fullmatch(netloc)
    user, host, port = (match.group("user"), match.group("host"), match.group("port")) if match else (None, netloc, None)
    if user is not None and (scheme != "qemu+ssh" or not _USER.fullmatch(user)):
        if scheme != "qemu+ssh":
            raise UnsafeURI(f"A {scheme} URI takes no user name (“{user}@”): only qemu+ssh logs in as a user.")
        raise UnsafeURI(
            f"“{user}” is not a user name blockmig accepts: letters, digits, “.”, “_” and “-”, not starting with “-”."
        )
    if not (_HOST.fullmatch(host) or _IPV6.fullmatch(host)) or len(host) > 255:
        raise UnsafeURI(f"“{host}” is not a host name blockmig accepts: a DNS name, an IPv4 address or an [IPv6] address.")
    number = None
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UnsafeURI(f"“{port}” is not a port: use a number from 1 to 65535, or leave it out.")
        number = int(port)
    return user or "", host, number


def _path(scheme: str, path: str) -> str:
    if scheme.startswith("qemu"):
        if path != "/system":
            raise UnsafeURI("A QEMU URI ends in /system, for example qemu:///system or qemu+ssh://host/system.")
        return path
    if path == "/default":
        return path
    if not path or path == "/":
        raise UnsafeURI("A test URI names its XML file or /default, for example test:///default.")
    # libvirt reads the path percent-decoded (test:///%65tc/… opens /etc/…): so do we.
    decoded = _decoded(path, "The test URI's file name")
    if _CONTROL.search(decoded):
        raise UnsafeURI("The test URI's file name contains a control character.")
    directory = node_file_dir()
    if directory is None:
        raise UnsafeURI(
            "Only test:///default is allowed here: no directory for test node files is configured (BLOCKMIG_TEST_DRIVER_DIR)."
        )
    real_dir = os.path.realpath(directory)
    real = os.path.realpath(decoded)
    if not real.startswith(real_dir.rstrip("/") + "/"):
        raise UnsafeURI(f"A test:/// file must be a node file under {real_dir} (BLOCKMIG_TEST_DRIVER_DIR); {decoded} is not.")
    if not os.path.isfile(real):
        raise UnsafeURI(f"There is no node file {decoded} under {real_dir}.")
    return decoded


def _parameters(scheme: str, query: str) -> list[tuple[str, str]]:
    if not query:
        return []
    # libvirt splits at "&" and, only where no "&" follows, at ";": refuse ";" rather than
    # guess which parameters libvirt would see.
    if ";" in query:
        raise UnsafeURI("The URI's parameters contain “;”: separate parameters with “&” only.")
    allowed = ALLOWED_PARAMETERS[scheme]
    parameters = []
    for section in query.split("&"):
        name, _, value = section.partition("=")
        # libvirt decodes both (comm%61nd= is command=); decode before judging.
        name, value = _decoded(name, "A URI parameter's name"), _decoded(value, "A URI parameter")
        if not name:
            raise UnsafeURI("The URI has an empty parameter (“&&”, “=value” or a trailing “&”): remove it.")
        if name not in allowed:
            raise UnsafeURI(_refused_parameter(scheme, name, allowed))
        if _CONTROL.search(value):
            raise UnsafeURI(f"The URI parameter “{name}” contains a control character.")
        if name == "keyfile":
            _check_keyfile(value)
        parameters.append((name, value))
    return parameters


def _decoded(text: str, what: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise UnsafeURI(f"{what} has a %-escape that is not UTF-8 text.") from None


def _refused_parameter(scheme: str, name: str, allowed: tuple[str, ...]) -> str:
    risk = PARAMETER_RISKS.get(name.lower())
    why = f" ({risk})" if risk else ""
    accepted = f"{scheme} URIs accept only {', '.join(allowed)}" if allowed else f"{scheme} URIs take no parameters"
    hint = ""
    if name.lower() == "no_verify":
        hint = " Add the host's key to the server's known_hosts (or its CA certificate) instead."
    return f"The URI parameter “{name}” is not allowed{why}: {accepted}.{hint}"


def _check_keyfile(value: str) -> None:
    directory = ssh_key_dir()
    if directory is None:
        raise UnsafeURI(
            "The URI parameter “keyfile” is allowed only under a configured key directory, and none is set "
            "(BLOCKMIG_SSH_KEY_DIR): set it, or leave keyfile out to use the server user's own SSH keys."
        )
    real_dir = os.path.realpath(directory)
    if not value.startswith("/"):
        raise UnsafeURI(f"The URI parameter “keyfile” needs an absolute path under {real_dir}.")
    real = os.path.realpath(value)
    if not real.startswith(real_dir.rstrip("/") + "/"):
        raise UnsafeURI(f"The URI parameter “keyfile” must name a file under {real_dir} (BLOCKMIG_SSH_KEY_DIR); {value} is not.")
    if not os.path.isfile(real):
        raise UnsafeURI(f"The URI parameter “keyfile” names {value}, and there is no such file under {real_dir}.")
