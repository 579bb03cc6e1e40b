"""Generated node files for libvirt's test driver (`test:///path/to/node.xml`).

The test driver reads a whole fake host from one XML file: <node> with <cpu>, <memory> and
any number of <domain type='test'> elements. Its own namespace sets a domain's run state
(<test:runstate>, a virDomainState number) and makes it transient (<test:transient/>); a
transient domain cannot be shut off. Tests and benchmarks use this to get thousands of
domains with real backing chains through the real libvirt API, without QEMU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
RUNSTATES = {"running": 1, "paused": 3, "shutoff": 5}


@dataclass(frozen=True)
class FakeDomain:
    """What one generated domain looks like; the expectations tests check against."""

    uuid: str
    name: str
    state: str  # running, paused, shutoff
    persistent: bool
    disks_xml: str
    chain_length: int  # layers of vda, 1 = no backing file
    disk_count: int


def fake_uuid(index: int) -> str:
    return f"b10c0000-0000-4000-8000-{index:012d}"


def _qcow2_chain_xml(directory: str, stem: str, length: int) -> str:
    """vda on `length` qcow2 layers: stem-L.qcow2 (active) ← … ← stem-1.qcow2 (base)."""
    inner = "<backingStore/>"
    for level in range(1, length):
        path = f"{directory}/{stem}-{level}.qcow2"
        inner = f"<backingStore type='file'><format type='qcow2'/><source file={quoteattr(path)}/>{inner}</backingStore>"
    active = f"{directory}/{stem}-{length}.qcow2"
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file={quoteattr(active)}/>{inner}<target dev='vda' bus='virtio'/></disk>"
    )


def _raw_file_xml(path: str, target: str) -> str:
    return (
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file={quoteattr(path)}/><target dev='{target}' bus='virtio'/></disk>"
    )


def _block_xml(dev: str, target: str) -> str:
    return (
        f"<disk type='block' device='disk'><driver name='qemu' type='raw'/>"
        f"<source dev={quoteattr(dev)}/><target dev='{target}' bus='scsi'/></disk>"
    )


def fake_domain(index: int) -> FakeDomain:
    """Domain number `index`: a mix of chains, raw, block, states and persistence.

    index % 4 == 0: running, vda = qcow2 chain of 3, vdb = raw file
    index % 4 == 1: running transient, vda = raw file
    index % 4 == 2: paused, vda = qcow2 with one backing file, sda = block device
    index % 4 == 3: shut off, vda = single qcow2 without backing
    Every 10th name carries a space and non-ASCII letters, as real estates do.
    """
    kind = index % 4
    name = f"vm-{index:05d}" if index % 10 else f"vm {index:05d} ünïcødé"
    directory = f"/srv/images/host {index // 100:03d}"
    stem = f"vm{index:05d}"
    if kind == 0:
        disks = _qcow2_chain_xml(directory, stem, 3) + _raw_file_xml(f"{directory}/{stem}-data.raw", "vdb")
        return FakeDomain(fake_uuid(index), name, "running", True, disks, 3, 2)
    if kind == 1:
        return FakeDomain(fake_uuid(index), name, "running", False, _raw_file_xml(f"{directory}/{stem}.raw", "vda"), 1, 1)
    if kind == 2:
        disks = _qcow2_chain_xml(directory, stem, 2) + _block_xml(f"/dev/mapper/vg-{stem}", "sda")
        return FakeDomain(fake_uuid(index), name, "paused", True, disks, 2, 2)
    return FakeDomain(fake_uuid(index), name, "shutoff", True, _qcow2_chain_xml(directory, stem, 1), 1, 1)


def domain_xml(domain: FakeDomain) -> str:
    extra = f"<test:runstate>{RUNSTATES[domain.state]}</test:runstate>"
    if not domain.persistent:
        extra += "<test:transient/>"
    return (
        f"<domain type='test'><name>{escape(domain.name)}</name><uuid>{domain.uuid}</uuid>"
        f"<memory>65536</memory><vcpu>1</vcpu><os><type>hvm</type></os>"
        f"<devices>{domain.disks_xml}</devices>{extra}</domain>"
    )


def node_xml(domains: list[FakeDomain]) -> str:
    header = (
        f"<node xmlns:test='{TEST_NS}'>"
        "<cpu><nodes>1</nodes><sockets>1</sockets><cores>2</cores><threads>1</threads>"
        "<active>2</active><mhz>2000</mhz><model>i686</model></cpu><memory>8388608</memory>"
    )
    return header + "\n".join(domain_xml(d) for d in domains) + "</node>\n"


def write_node(path: Path, count: int, skip: frozenset[int] = frozenset()) -> list[FakeDomain]:
    """Write a node file with domains 0..count-1 (minus `skip`) and return what it holds."""
    domains = [fake_domain(i) for i in range(count) if i not in skip]
    path.write_text(node_xml(domains), encoding="utf-8")
    return domains


def node_uri(path: Path) -> str:
    """The URI of a node file. blockmig connects only to node files under
    settings.BLOCKMIG_TEST_DRIVER_DIR (hosts.uris); libvirt decodes the %-escapes."""
    return f"test://{quote(str(path.resolve()))}"
