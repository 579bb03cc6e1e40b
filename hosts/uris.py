"""Which libvirt URIs blockmig accepts, checked before any connection is tried."""

from urllib.parse import urlsplit

URI_SCHEMES = ("qemu", "qemu+ssh", "qemu+tcp", "qemu+tls", "qemu+unix", "test")


def uri_problem(uri: str) -> str | None:
    """Return what is wrong with a libvirt URI in words an admin can act on, or None."""
    uri = uri.strip()
    if not uri:
        return "Enter a libvirt URI, for example qemu:///system."
    if "://" not in uri:
        return f"“{uri}” is not a libvirt URI: it needs a scheme, for example qemu:///system or qemu+ssh://host/system."
    parts = urlsplit(uri)
    if parts.scheme not in URI_SCHEMES:
        return f"Unsupported scheme “{parts.scheme}”: use one of {', '.join(s + '://' for s in URI_SCHEMES)}."
    if parts.scheme in ("qemu+ssh", "qemu+tcp", "qemu+tls") and not parts.hostname:
        return f"A {parts.scheme} URI needs a host name, for example {parts.scheme}://kvm01.example.org/system."
    if parts.scheme.startswith("qemu") and parts.path not in ("/system", "/session"):
        return "A QEMU URI ends in /system or /session, for example qemu:///system."
    if parts.scheme == "test" and not parts.path:
        return "A test URI names its XML file or /default, for example test:///default."
    return None
