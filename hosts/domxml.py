"""Domain XML → plain records.

Pure parsing, no libvirt: the unit tests feed it XML strings. Backing chains come from
the nested <backingStore> elements libvirt writes into the live XML; sizes come later
from the bulk stats (see merge_block_stats).
"""

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import replace

from hosts.records import BlockJobInfo, ChainLayer, DiskRecord

# One domain's entry of getAllDomainStats: flat "block.0.path"-style keys; values are
# ints, strings, floats or booleans as libvirt types each field.
DomainStats = Mapping[str, int | float | str | bool]


def _source_path(disk_type: str, source: ET.Element | None) -> str:
    if source is None:
        return ""
    if disk_type == "network":
        name = source.get("name", "")
        protocol = source.get("protocol", "")
        host = source.find("host")
        where = f"{host.get('name', '')}:{host.get('port', '')}".rstrip(":") if host is not None else ""
        return f"{protocol}://{where}/{name}" if protocol else name
    return source.get("file") or source.get("dev") or source.get("volume") or source.get("name") or ""


def _format(element: ET.Element, tag: str) -> str:
    found = element.find(tag)
    return found.get("type", "") if found is not None else ""


def _chain(disk: ET.Element, disk_type: str, active_path: str, active_format: str) -> tuple[ChainLayer, ...]:
    layers = [ChainLayer(depth=0, path=active_path, format=active_format, type=disk_type, missing=not active_path)]
    store = disk.find("backingStore")
    depth = 1
    while store is not None:
        source = store.find("source")
        if source is None and store.find("backingStore") is None:
            break  # an empty <backingStore/> closes the chain
        layer_type = store.get("type", "file")
        path = _source_path(layer_type, source)
        layers.append(
            ChainLayer(
                depth=depth,
                path=path,
                format=_format(store, "format"),
                type=layer_type,
                missing=not path,
            )
        )
        store = store.find("backingStore")
        depth += 1
    return tuple(layers)


def _mirror(disk: ET.Element) -> BlockJobInfo | None:
    mirror = disk.find("mirror")
    if mirror is None:
        return None
    mirror_type = mirror.get("type", "file")
    path = mirror.get("file") or _source_path(mirror_type, mirror.find("source"))
    return BlockJobInfo(
        type=mirror.get("job", "copy"),
        mirror_path=path,
        mirror_format=mirror.get("format") or _format(mirror, "format"),
        ready=mirror.get("ready") == "yes",
    )


def parse_disks(domain_xml: str) -> tuple[DiskRecord, ...]:
    """Every <disk> of a domain with its backing chain and any mirror (block copy) on it."""
    root = ET.fromstring(domain_xml)
    disks = []
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        dev = target.get("dev") if target is not None else None
        if target is None or not dev:
            continue
        disk_type = disk.get("type", "file")
        source = _source_path(disk_type, disk.find("source"))
        driver = disk.find("driver")
        disk_format = driver.get("type", "") if driver is not None else ""
        disks.append(
            DiskRecord(
                target=dev,
                bus=target.get("bus", ""),
                device=disk.get("device", "disk"),
                type=disk_type,
                format=disk_format,
                source=source,
                readonly=disk.find("readonly") is not None,
                shareable=disk.find("shareable") is not None,
                chain=_chain(disk, disk_type, source, disk_format) if source else (),
                job=_mirror(disk),
            )
        )
    return tuple(disks)


def domain_identity(domain_xml: str) -> tuple[str, str]:
    root = ET.fromstring(domain_xml)
    return (root.findtext("uuid", ""), root.findtext("name", ""))


def merge_block_stats(disks: tuple[DiskRecord, ...], stats: DomainStats) -> tuple[DiskRecord, ...]:
    """Add capacity/allocation per layer from getAllDomainStats(BLOCK, BACKING).

    Stats list each layer as block.N.{name,path,backingIndex,capacity,allocation,physical};
    the active layer carries no backingIndex (or 0 on some versions), so layers are matched
    by target name and path. A layer's stored allocation is its `physical` size (bytes the
    image takes on the host): libvirt's `allocation` stat is the highest offset QEMU wrote
    through it, which reads 0 for every backing layer and for an active layer not yet written.
    """
    by_key: dict[tuple[str, str], dict[str, int]] = {}
    for i in range(int(stats.get("block.count", 0))):
        prefix = f"block.{i}."
        name = str(stats.get(prefix + "name", ""))
        path = str(stats.get(prefix + "path", ""))
        sizes = {
            "capacity": stats.get(prefix + "capacity"),
            "allocation": stats.get(prefix + "physical", stats.get(prefix + "allocation")),
        }
        by_key[(name, path)] = {k: int(v) for k, v in sizes.items() if v is not None}
    merged = []
    for disk in disks:
        chain = tuple(_with_sizes(layer, by_key.get((disk.target, layer.path), {})) for layer in disk.chain)
        unchanged = all(new is old for new, old in zip(chain, disk.chain))
        merged.append(disk if unchanged else replace(disk, chain=chain))
    return tuple(merged)


def _with_sizes(layer: ChainLayer, sizes: Mapping[str, int]) -> ChainLayer:
    """The layer with the sizes the stats gave; a size they left out stays as it was."""
    capacity = sizes.get("capacity", layer.capacity)
    allocation = sizes.get("allocation", layer.allocation)
    if capacity == layer.capacity and allocation == layer.allocation:
        return layer
    # The constructor, not dataclasses.replace: this runs for every layer of a first sync,
    # and replace's field introspection cost more than parsing the layer did.
    return ChainLayer(
        depth=layer.depth,
        path=layer.path,
        format=layer.format,
        type=layer.type,
        capacity=capacity,
        allocation=allocation,
        missing=layer.missing,
    )


def stats_signature(stats: DomainStats) -> str:
    """What in the bulk stats would change if the domain's disks or state changed."""
    parts = [str(stats.get("state.state", ""))]
    for i in range(int(stats.get("block.count", 0))):
        prefix = f"block.{i}."
        parts.append(
            f"{stats.get(prefix + 'name', '')}={stats.get(prefix + 'path', '')}@{stats.get(prefix + 'backingIndex', '')}"
        )
    return hashlib.sha1("|".join(parts).encode()).hexdigest()
