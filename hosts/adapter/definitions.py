"""The disk XML blockmig writes: the destination <disk> of a block copy, and the persistent
definition pointed at the copies after a pivot. Pure XML; no connection needed."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from urllib.parse import urlsplit

# The port an nbd:// URL without one means (IANA's port for NBD).
NBD_DEFAULT_PORT = 10809


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
